package policy

import (
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

// FuzzBuildInput: any path, header and body a client can put into a
// CheckRequest gives either an input document or an error — never a panic —
// and parsed_path always agrees with the raw path when nothing needed
// decoding.
func FuzzBuildInput(f *testing.F) {
	for _, s := range []struct{ path, ct, body string }{
		{"/", "", ""},
		{"/api/orders?x=1&x=2", "application/json", `{"a":1}`},
		{"//admin/./..%2f;x=1?%zz", "application/x-www-form-urlencoded", "a=1&b=%zz"},
		{"/%c0%ae%c0%ae/admin", "application/json", `{"a":`},
		{"/a?b=c;d", "application/json; charset=utf-8", `[1,2,3]`},
		{"\\admin\x00", "application/json", "\xff\xfe"},
		{"/p", "application/json", strings.Repeat("[", 10000)},
	} {
		f.Add(s.path, s.ct, s.body)
	}
	f.Fuzz(func(t *testing.T, path, ct, body string) {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{
				Path: path, Body: body,
				Headers: map[string]string{":path": path, "content-type": ct},
			},
		}}}
		in, err := BuildInput(req, nil, WithMaxBodyBytes(4096))
		if err != nil {
			if in != nil {
				t.Fatal("input returned with an error")
			}
			return
		}
		obj, ok := in.(ast.Object)
		if !ok {
			t.Fatalf("input is %T", in)
		}
		pp, ok := obj.Get(ast.StringTerm("parsed_path")).Value.(*ast.Array)
		if !ok || pp.Len() == 0 {
			t.Fatalf("parsed_path = %v", obj.Get(ast.StringTerm("parsed_path")))
		}
		rawPath, _, _ := strings.Cut(path, "?")
		if !strings.Contains(rawPath, "%") {
			segs := make([]string, pp.Len())
			for i := range segs {
				segs[i] = string(pp.Elem(i).Value.(ast.String))
			}
			if got, want := strings.Join(segs, "/"), strings.TrimLeft(rawPath, "/"); got != want {
				t.Fatalf("parsed_path %q does not match raw path %q", got, want)
			}
		}
		if tb := obj.Get(ast.StringTerm("truncated_body")); tb == nil {
			t.Fatal("truncated_body missing")
		}
	})
}
