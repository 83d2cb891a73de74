package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The bench policies are assembled from ordersPolicy; each must compile
// and keep its own condition, or a case would measure the wrong policy.
func TestBenchPoliciesCompile(t *testing.T) {
	tests := []struct {
		name, src, cond string
	}{
		{"rego only", regoOnly, `headers["x-tenant"] == "acme"`},
		{"gatehouse RBAC", gatehouseRBAC, `"reader" in input.identity.roles`},
		{"opa JWT RBAC", fmt.Sprintf(opaJWTRBAC, `{"keys":[]}`, "https://issuer.example"), `io.jwt.decode_verify(token`},
		{"session", sessionPolicy, `input.identity.kind == "user"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tt.src, tt.cond) {
				t.Fatalf("policy lacks %q:\n%s", tt.cond, tt.src)
			}
			m, err := ast.ParseModuleWithOpts("bench.rego", tt.src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				t.Fatal(err)
			}
			c := ast.NewCompiler()
			if c.Compile(map[string]*ast.Module{"bench.rego": m}); c.Failed() {
				t.Fatal(c.Errors)
			}
			if m.Package.Path.String() != "data.envoy.authz" {
				t.Errorf("package %s", m.Package.Path)
			}
		})
	}
}
