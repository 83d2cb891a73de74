package policy

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// TestRegoPolicies runs the Rego unit tests of the shipped example policies;
// any failing or erroring Rego test fails the Go test.
func TestRegoPolicies(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	passed, failed, results, err := RunTests(ctx, "../../policies")
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	for _, r := range results {
		if !r.Pass() && !r.Skip {
			t.Errorf("%s", r.String())
			if r.Error != nil {
				t.Errorf("  error: %v", r.Error)
			}
		}
	}
	if failed > 0 || passed == 0 {
		t.Fatalf("rego tests: %d passed, %d failed", passed, failed)
	}
	t.Logf("rego tests: %d passed", passed)
}

func user(roles ...string) *identity.Identity {
	return &identity.Identity{Kind: identity.KindUser, Subject: "alice", Method: identity.MethodJWKS, Roles: roles}
}

// TestShippedPoliciesEndToEnd drives the example policies through the real
// input builder with raw paths as a client could send them, so the bypass
// attempts are checked against what BuildInput actually produces.
func TestShippedPoliciesEndToEnd(t *testing.T) {
	e, err := New(t.Context(), WithDir("../../policies"), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	reader, writer, admin := user("reader"), user("writer"), user("admin")
	tests := []struct {
		method, path string
		id           *identity.Identity
		want         bool
	}{
		{"GET", "/healthz", nil, true},
		{"GET", "/public/app.js?v=3", nil, true},
		{"GET", "/api/orders/7?expand=items", reader, true},
		{"POST", "/api/orders", writer, true},
		{"DELETE", "/admin/users/1", admin, true},
		{"GET", "/api/inventory/sku-1", serviceIdentity(), true},
		{"GET", "/%61pi/orders", reader, true}, // decodes to the same canonical path

		{"GET", "/api/orders", nil, false},
		{"POST", "/api/orders", reader, false},
		{"GET", "/admin", reader, false},
		{"GET", "//admin", writer, false},
		{"GET", "/%61dmin", writer, false},
		{"GET", "/Admin", writer, false},
		{"GET", "/admin/.", writer, false},
		{"GET", "/Admin/users", admin, false},
		{"GET", "/api/orders/../../admin", reader, false},
		{"GET", "/api/orders/%2e%2e/%2e%2e/admin", reader, false},
		{"GET", "/api/orders/..%2f..%2fadmin", reader, false},
		{"GET", "/api/orders/..;/..;/admin", reader, false},
		{"GET", "/api/orders;jsessionid=1", reader, false},
		{"GET", "/api/orders/%252e%252e/admin", reader, false},
		{"GET", "/api/orders\\..\\..\\admin", reader, false},
		{"GET", "/api//orders", reader, false},
		{"GET", "/api/orders/", reader, false},
		{"GET", "/public/../admin", nil, false},
		{"GET", "/healthz/.", nil, false},
		{"GET", "/healthz?/admin", nil, true}, // the query is not part of the path
		{"GET", "/admin?x=/api/orders", reader, false},
		{"GET", "/api/orders/%zz", reader, false}, // undecodable: input error, deny
	}
	for _, tt := range tests {
		name := tt.method + " " + tt.path
		if tt.id != nil {
			name += " as " + strings.Join(tt.id.Roles, ",") + tt.id.SPIFFEID
		}
		t.Run(name, func(t *testing.T) {
			d, err := e.EvaluateRequest(t.Context(), httpRequestMethod(tt.method, tt.path), tt.id)
			if d.Allowed != tt.want {
				t.Errorf("allowed = %v, want %v (reason %q, err %v)", d.Allowed, tt.want, d.Reason, err)
			}
			if d.Allowed && err != nil {
				t.Errorf("allowed with error %v", err)
			}
			if strings.Contains(tt.path, "%zz") && !errors.Is(err, ErrInput) {
				t.Errorf("err = %v, want ErrInput", err)
			}
		})
	}
}

func httpRequestMethod(method, path string) *authv3.CheckRequest {
	r := httpRequest(path, map[string]string{":method": method, ":path": path}, "")
	r.Attributes.Request.Http.Method = method
	return r
}

// BenchmarkEvaluate measures one decision with the shipped policies on a
// realistic request, input building included.
func BenchmarkEvaluate(b *testing.B) {
	e, err := New(b.Context(), WithDir("../../policies"), WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	req, id := realisticRequest(b), serviceIdentity()
	b.ReportAllocs()
	for b.Loop() {
		d, err := e.EvaluateRequest(b.Context(), req, id)
		if err != nil || !d.Allowed {
			b.Fatalf("decision %+v, %v", d, err)
		}
	}
}

// BenchmarkEvaluatePrepared excludes input building.
func BenchmarkEvaluatePrepared(b *testing.B) {
	e, err := New(b.Context(), WithDir("../../policies"), WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	input, err := BuildInput(realisticRequest(b), serviceIdentity())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Evaluate(b.Context(), input); err != nil || !d.Allowed {
			b.Fatalf("decision %+v, %v", d, err)
		}
	}
}

// TestPoliciesFormatted keeps the shipped Rego in `opa fmt` style.
func TestPoliciesFormatted(t *testing.T) {
	err := filepath.WalkDir("../../policies", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".rego") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := format.SourceWithOpts(path, src, format.Opts{RegoVersion: ast.RegoV1})
		if err != nil {
			return err
		}
		if !bytes.Equal(got, src) {
			t.Errorf("%s is not opa fmt formatted; formatted:\n%s", path, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
