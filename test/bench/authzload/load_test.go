package authzload

import (
	"context"
	"net"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// allowAll answers OK to every check.
type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

func startServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, allowAll{})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// TestRunVerifiesAnswers: an answer that differs from the fixture's
// expectation is a failure, however fast it came.
func TestRunVerifiesAnswers(t *testing.T) {
	addr := startServer(t)
	req := Request("GET", "/api/orders/42", map[string]string{"authorization": "Bearer x"})
	tests := []struct {
		name         string
		allow        []bool
		wantFailures bool
		wantAllFail  bool
	}{
		{"expected allow", []bool{true}, false, false},
		{"expected deny", []bool{false}, true, true},
		{"mixed", []bool{true, true, false}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fs []Fixture
			for _, a := range tt.allow {
				f, err := NewFixture(req, a)
				if err != nil {
					t.Fatal(err)
				}
				fs = append(fs, f)
			}
			// The first check of Run uses fixture 0, which must succeed to
			// start; put an expected-allow first except in the all-deny case.
			res, err := Run(context.Background(), Load{Addr: addr, Concurrency: 4, Duration: 200 * time.Millisecond, Fixtures: fs})
			if tt.wantAllFail {
				if err == nil {
					t.Fatalf("a load whose first answer is wrong started: %+v", res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests == 0 || res.RPS <= 0 || res.P99 < res.P50 {
				t.Fatalf("implausible result %+v", res)
			}
			if got := res.Failures > 0; got != tt.wantFailures {
				t.Fatalf("failures = %d (first: %s), want failures: %v", res.Failures, res.FirstFailure, tt.wantFailures)
			}
		})
	}
}

func TestRequestIsRealistic(t *testing.T) {
	b, err := NewFixture(Request("GET", "/api/orders/42", nil), true)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.Raw); n < 900 || n > 2000 {
		t.Errorf("encoded request is %d bytes, want about 1 KB of headers", n)
	}
}
