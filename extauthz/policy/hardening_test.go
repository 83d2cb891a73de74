package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// edgeRejects marks a path the Gatehouse edge never lets through to
// ext_authz: path_with_escaped_slashes_action is REJECT_REQUEST, so Envoy
// answers 400 itself. notModeled marks a path whose Envoy treatment these
// tests do not pin down (only the raw form is checked).
const (
	edgeRejects = "<400>"
	notModeled  = "<?>"
)

// TestShippedPoliciesResistPathBypass extends TestShippedPoliciesEndToEnd
// with the remaining bypass shapes of the hardening list, each checked twice
// against the shipped policies through BuildInput:
//
//   - raw: the path exactly as a client wrote it, as a listener without
//     normalisation (or a direct caller of the authz port) sends it;
//   - edge: the path as Gatehouse's edge and sidecar listeners send it
//     (xds/translate sets normalize_path, merge_slashes and
//     path_with_escaped_slashes_action REJECT_REQUEST; see
//     TestEnvoyNormalisationSettings in xds/translate).
//
// What Envoy does to the path before ext_authz sees it:
//
//   - normalize_path (RFC 3986 §6.2.2): percent-decodes only unreserved
//     characters (%61 → a, %2e → .), upper-cases the hex of the other
//     escapes, and removes "." and ".." segments (also when they were
//     written %2e). It does not decode %2F/%5C, does not touch ";"
//     parameters or %25 (so double encoding survives), and never case-folds
//     ("/Admin" stays "/Admin");
//   - merge_slashes: "//admin" → "/admin" (normalize_path alone keeps it);
//   - escaped slashes: by default (KEEP_UNCHANGED) "%2F" reaches ext_authz
//     and the upstream as is — BuildInput decodes it into a separator, an
//     upstream may not — so Gatehouse rejects them at the edge;
//   - the query string is never part of the path.
//
// The shipped path.rego does not rely on any of that: a path is only
// matched when every decoded segment is canonical, so each row below is
// denied in its raw form too (except the canonical controls).
func TestShippedPoliciesResistPathBypass(t *testing.T) {
	e, err := New(t.Context(), WithDir("../../policies"), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	reader, writer, admin := user("reader"), user("writer"), user("admin")
	tests := []struct {
		raw      string
		edge     string // the path after the edge's normalisation
		id       *identity.Identity
		wantRaw  bool
		wantEdge bool
	}{
		// Canonical controls.
		{"/public/app.js", "/public/app.js", nil, true, true},
		{"/api/orders/7", "/api/orders/7", reader, true, true},
		{"/admin/users", "/admin/users", admin, true, true},
		{"/admin?x=1", "/admin?x=1", admin, true, true},

		// Dot segments.
		{"/./admin", "/admin", writer, false, false},
		{"/./admin", "/admin", admin, false, true}, // raw form is not canonical: denied even to admin
		{"/admin/.", "/admin/", admin, false, false},
		{"/%2e/admin", "/admin", writer, false, false},
		{"/%2e%2e/admin", "/admin", writer, false, false},
		{"/public/x/../../admin", "/admin", nil, false, false},
		{"/public/%2e%2e/admin", "/admin", nil, false, false},
		{"/public/.%2e/admin", "/admin", nil, false, false},
		{"/api/orders/.%2E/.%2E/admin", "/admin", reader, false, false},
		{"/healthz/%2e", "/healthz/", nil, false, false},
		{"/public/logo.png;/../../admin", "/admin", nil, false, false},

		// Encoding and case.
		{"/%61dmin", "/admin", writer, false, false},
		{"/adm%69n/users", "/admin/users", reader, false, false},
		{"/Admin", "/Admin", admin, false, false},
		{"/ADMIN/users", "/ADMIN/users", admin, false, false},
		{"/public/%252e%252e/admin", "/public/%252e%252e/admin", nil, false, false},
		{"/public/%c0%ae%c0%ae/admin", "/public/%C0%AE%C0%AE/admin", nil, false, false},             // overlong UTF-8 "."
		{"/public/%ef%bc%8e%ef%bc%8e/admin", "/public/%EF%BC%8E%EF%BC%8E/admin", nil, false, false}, // fullwidth "．．"
		{"/public/x%00", "/public/x%00", nil, false, false},
		{"/public/x%0d%0aX-Gatehouse-Subject:%20root", "/public/x%0D%0AX-Gatehouse-Subject:%20root", nil, false, false},

		// Slashes.
		{"//admin", "/admin", writer, false, false},
		{"/public//x", "/public/x", nil, false, true},
		{"/admin%2F..", edgeRejects, admin, false, false},
		{"/admin%2f..%2f", edgeRejects, admin, false, false},
		{"/public%2F..%2Fadmin", edgeRejects, nil, false, false},
		{"/public/x%2F..%2F..%2Fadmin", edgeRejects, nil, false, false},
		{"/api/orders/%5c..%5cadmin", edgeRejects, reader, false, false},
		{"\\admin", notModeled, admin, false, false},
		{"/public\\..\\admin", notModeled, nil, false, false},

		// Parameters, query and fragment.
		{"/admin;x=1", "/admin;x=1", admin, false, false},
		{"/public/x;/../../admin", "/admin", nil, false, false},
		{"/public/..;/admin", "/public/..;/admin", nil, false, false},
		{"/healthz;", "/healthz;", nil, false, false},
		{"/healthz%3F/admin", "/healthz%3F/admin", nil, false, false},
		{"/admin?role=admin", "/admin?role=admin", writer, false, false},
		{"/public/x?/../../admin", "/public/x?/../../admin", nil, true, true}, // the query is not the path
		{"/public/x#/../admin", notModeled, nil, false, false},
	}
	check := func(t *testing.T, path string, id *identity.Identity, want bool) {
		t.Helper()
		d, err := e.EvaluateRequest(t.Context(), httpRequestMethod("GET", path), id)
		if d.Allowed != want {
			t.Errorf("%q: allowed = %v, want %v (reason %q, err %v)", path, d.Allowed, want, d.Reason, err)
		}
		if d.Allowed && err != nil {
			t.Errorf("%q: allowed with error %v", path, err)
		}
	}
	for _, tt := range tests {
		who := "anonymous"
		if tt.id != nil {
			who = strings.Join(tt.id.Roles, ",")
		}
		t.Run(tt.raw+" as "+who, func(t *testing.T) {
			check(t, tt.raw, tt.id, tt.wantRaw)
			switch tt.edge {
			case edgeRejects:
				if !strings.Contains(strings.ToLower(tt.raw), "%2f") && !strings.Contains(strings.ToLower(tt.raw), "%5c") {
					t.Fatalf("row says the edge rejects %q, but it has no escaped slash", tt.raw)
				}
			case notModeled:
			default:
				check(t, tt.edge, tt.id, tt.wantEdge)
			}
		})
	}
}

// TestLiveEditsKeepLastGood walks one engine through the ways a policy
// directory goes wrong while it is live. After every bad step the last good
// revision keeps answering and Status().LastError says what went wrong;
// the next good step clears it.
func TestLiveEditsKeepLastGood(t *testing.T) {
	const (
		v1 = "package envoy.authz\n\ndefault allow := false\n\nallow if input.user == \"alice\"\n"
		v2 = "package envoy.authz\n\ndefault allow := false\n\nallow if input.user == \"bob\"\n"
	)
	e, dir, err := newTestEngine(t, map[string]string{"authz.rego": v1})
	if err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(dir, "authz.rego")
	bigPolicy := func() string {
		var b strings.Builder
		b.WriteString(v2)
		line := "# " + strings.Repeat("padding ", 12) + "\n"
		for b.Len() < 10<<20 {
			b.WriteString(line)
		}
		return b.String()
	}

	steps := []struct {
		name    string
		do      func(t *testing.T)
		wantErr string // substring of the reload error; "" = must succeed
		serving string // who is allowed afterwards: "alice" or "bob"
	}{
		{name: "partial write (half a file)", wantErr: "authz.rego", serving: "alice",
			do: func(t *testing.T) { writeFiles(t, dir, map[string]string{"authz.rego": v2[:len(v2)/2]}) }},
		{name: "write completed", serving: "bob",
			do: func(t *testing.T) { writeFiles(t, dir, map[string]string{"authz.rego": v2}) }},
		{name: "truncated to zero bytes mid-save", wantErr: "authz.rego", serving: "bob",
			do: func(t *testing.T) { must(t, os.WriteFile(policyPath, nil, 0o644)) }},
		{name: "rename-on-save from a hidden temp file", serving: "alice",
			do: func(t *testing.T) {
				tmp := filepath.Join(dir, ".authz.rego.swp")
				must(t, os.WriteFile(tmp, []byte(v1), 0o644))
				must(t, os.Rename(tmp, policyPath))
			}},
		{name: "editor backup and temp files are ignored", serving: "alice",
			do: func(t *testing.T) {
				writeFiles(t, dir, map[string]string{"authz.rego~": syntaxError, "4913": "x", "authz.rego.tmp": syntaxError, ".authz.rego.swx": syntaxError})
			}},
		{name: "binary garbage in a .rego file", wantErr: "junk.rego", serving: "alice",
			do: func(t *testing.T) { writeFiles(t, dir, map[string]string{"junk.rego": "\x00\xff\xfe\x01package"}) }},
		{name: "garbage removed", serving: "alice",
			do: func(t *testing.T) { must(t, os.Remove(filepath.Join(dir, "junk.rego"))) }},
		{name: "half-written data.json", wantErr: "data.json", serving: "alice",
			do: func(t *testing.T) { writeFiles(t, dir, map[string]string{"data.json": `{"users": ["al`}) }},
		{name: "data.json completed", serving: "alice",
			do: func(t *testing.T) { writeFiles(t, dir, map[string]string{"data.json": `{"users": ["alice"]}`}) }},
		{name: "directory deleted", wantErr: "no such file", serving: "alice",
			do: func(t *testing.T) { must(t, os.RemoveAll(dir)) }},
		{name: "directory replaced by a file", wantErr: "not a directory", serving: "alice",
			do: func(t *testing.T) { must(t, os.WriteFile(dir, []byte(v2), 0o644)) }},
		{name: "directory recreated", serving: "bob",
			do: func(t *testing.T) {
				must(t, os.Remove(dir))
				writeFiles(t, dir, map[string]string{"authz.rego": v2})
			}},
		// Policy files are bounded (MaxPolicyFileBytes): a 10 MB policy is
		// refused with its file named, and the previous revision serves on.
		{name: "10 MB policy", wantErr: "larger than", serving: "bob",
			do: func(t *testing.T) { writeFiles(t, dir, map[string]string{"authz.rego": bigPolicy()}) }},
		{name: "back to a small policy", serving: "alice",
			do: func(t *testing.T) { writeFiles(t, dir, map[string]string{"authz.rego": v1}) }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := e.Status()
			st.do(t)
			err := e.Reload(t.Context())
			status := e.Status()
			if st.wantErr == "" {
				if err != nil {
					t.Fatalf("Reload: %v", err)
				}
				if status.LastError != "" {
					t.Errorf("LastError not cleared: %q", status.LastError)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), st.wantErr) {
					t.Fatalf("Reload error = %v, want one mentioning %q", err, st.wantErr)
				}
				if status.LastError != err.Error() || status.LastErrorAt.IsZero() {
					t.Errorf("error not visible in Status: %+v", status)
				}
				if status.Revision != before.Revision {
					t.Errorf("revision changed on a failed reload: %s → %s", before.Revision, status.Revision)
				}
			}
			for _, who := range []string{"alice", "bob"} {
				d, evalErr := eval(t, e, `{"user": "`+who+`"}`)
				if evalErr != nil {
					t.Fatalf("Evaluate: %v", evalErr)
				}
				if d.Allowed != (who == st.serving) {
					t.Errorf("%s allowed = %v; want only %s allowed", who, d.Allowed, st.serving)
				}
			}
		})
	}
}

// TestEvalTimeFailuresDeny: policies that load but fail while deciding.
// The dangerous shape is a deny rule used under "not": if a builtin error
// inside it made the rule merely undefined, "not deny" would hold and the
// request would be allowed. Strict builtin errors turn it into a deny.
func TestEvalTimeFailuresDeny(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		input string
		want  error
	}{
		{
			name: "builtin error inside a deny rule",
			files: map[string]string{"p.rego": `package envoy.authz

default allow := false

allow if not deny

deny if to_number(input.user) > 10
`},
			input: `{"user": "bob"}`,
			want:  ErrEval,
		},
		{
			name: "regex builtin error inside a deny rule",
			files: map[string]string{"p.rego": `package envoy.authz

default allow := false

allow if not deny

deny if regex.match(input.pattern, "admin")
`},
			input: `{"pattern": "("}`,
			want:  ErrEval,
		},
		{
			name: "conflicting complete rules across two files",
			files: map[string]string{
				"a.rego": "package envoy.authz\n\nallow := true if input.user == \"bob\"\n",
				"b.rego": "package envoy.authz\n\nallow := false if input.user == \"bob\"\n",
			},
			input: `{"user": "bob"}`,
			want:  ErrEval,
		},
		{
			name: "conflicting object keys in a decision",
			files: map[string]string{"p.rego": `package envoy.authz

allow := {"allowed": true, "headers": h}

h[k] := "a" if k := input.k

h[k] := "b" if k := input.k
`},
			input: `{"k": "x-tenant"}`,
			want:  ErrEval,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, err := newTestEngine(t, tt.files)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			d, err := eval(t, e, tt.input)
			if d.Allowed || !errors.Is(err, tt.want) {
				t.Errorf("allowed = %v, err = %v; want deny with %v", d.Allowed, err, tt.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestBuildInputHugeRequests pins what BuildInput bounds and what it does
// not. parsed_body is bounded (WithMaxBodyBytes): a 10 MB JSON body is
// reported truncated, not parsed. The header map and the raw body under
// attributes.request.http are copied whole — BuildInput has no header-count
// or raw-body bound of its own; the gRPC MaxRecvMsgSize (4 MiB) and Envoy's
// header and with_request_body limits are what bound them.
func TestBuildInputHugeRequests(t *testing.T) {
	headers := map[string]string{"content-type": "application/json"}
	for i := range 10000 {
		headers["x-h-"+strconv.Itoa(i)] = "v"
	}
	body := `{"a":"` + strings.Repeat("x", 10<<20) + `"}`
	in, err := BuildInput(httpRequest("/api/orders", headers, body), nil, WithMaxBodyBytes(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	obj := in.(ast.Object)
	if got := obj.Get(ast.StringTerm("parsed_body")).Value; got.Compare(ast.NullValue) != 0 {
		t.Errorf("parsed_body = %.40v…, want null", got)
	}
	if got := obj.Get(ast.StringTerm("truncated_body")).Value; got.Compare(ast.Boolean(true)) != 0 {
		t.Errorf("truncated_body = %v, want true", got)
	}
	httpObj, err := obj.Find(ast.MustParseRef("x.attributes.request.http")[1:])
	if err != nil {
		t.Fatal(err)
	}
	h := httpObj.(ast.Object)
	n := h.Get(ast.StringTerm("headers")).Value.(ast.Object).Len()
	raw := len(string(h.Get(ast.StringTerm("body")).Value.(ast.String)))
	t.Logf("input carries %d headers and a %d-byte raw body (no bound in BuildInput)", n, raw)
	if n != len(headers) {
		t.Errorf("input has %d headers, request %d", n, len(headers))
	}
}
