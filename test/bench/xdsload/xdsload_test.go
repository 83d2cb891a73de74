package xdsload

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/test/gatehousebin"
)

// binary is the gatehouse binary built once for the package's tests.
var binary string

func TestMain(m *testing.M) { gatehousebin.Main(m, &binary) }

// TestFleetConverges is the CI-sized fleet: 500 streams (fewer with
// -short or XDSLOAD_STREAMS) on the 50-service mesh. It asserts
// correctness only — every stream converges after a config edit, an
// endpoint change and a certificate rotation, nothing is NACKed or pushed
// in a loop, and the server's goroutines return to their baseline once the
// fleet disconnects. Timings are logged, never asserted.
func TestFleetConverges(t *testing.T) {
	streams := 500
	if testing.Short() {
		streams = 100
	}
	if s := os.Getenv("XDSLOAD_STREAMS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("XDSLOAD_STREAMS: %v", err)
		}
		streams = n
	}
	tests := []struct {
		name  string
		delta bool
	}{
		{"sotw", false},
		{"delta", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res, err := Run(ctx, Options{
				Bin: binary, Dir: t.TempDir(), Streams: streams, Delta: tt.delta, Mesh: DefaultMesh(),
				Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d streams connected in %s; heap %.1f KB/stream; goroutines %d → %d → %d",
				res.Mode, res.Streams, res.Connect, res.HeapPerStream/1024, res.GoroutinesIdle, res.GoroutinesConn, res.GoroutinesEnd)
			if len(res.Changes) != 3 {
				t.Fatalf("measured %d changes, want 3", len(res.Changes))
			}
			for _, c := range res.Changes {
				t.Logf("%s change (%s): %d streams of %d nodes converged in %s, at most %d pushes per stream",
					c.Kind, c.Type, c.Streams, c.Nodes, c.Converge, c.MaxPushes)
				if c.Streams == 0 {
					t.Errorf("%s change reached no stream", c.Kind)
				}
				// One push per changed type, a few more when a rotation
				// is pushed secret by secret; a NACK loop is hundreds.
				if c.MaxPushes > 20 {
					t.Errorf("%s change: a stream received %d pushes (push loop)", c.Kind, c.MaxPushes)
				}
			}
			if res.NACKs != 0 {
				t.Errorf("%d NACKs: the control plane sent resources Envoy rejects", res.NACKs)
			}
			if !res.GoroutinesBack {
				t.Errorf("goroutines %d after disconnect, baseline %d", res.GoroutinesEnd, res.GoroutinesIdle)
			}
		})
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
