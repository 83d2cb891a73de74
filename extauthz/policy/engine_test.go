package policy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// writeFiles writes name→content under dir; an empty content deletes.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if content == "" {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func newTestEngine(t testing.TB, files map[string]string, opts ...Option) (*Engine, string, error) {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	e, err := New(t.Context(), append([]Option{WithDir(dir), WithLogger(quietLogger())}, opts...)...)
	if e == nil {
		t.Fatalf("New returned nil engine: %v", err)
	}
	return e, dir, err
}

func eval(t testing.TB, e *Engine, input string) (*Decision, error) {
	t.Helper()
	d, err := e.Evaluate(t.Context(), mustJSONValue(t, input))
	if d == nil {
		t.Fatal("Evaluate returned nil decision")
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(d.ID) {
		t.Errorf("decision id %q is not 128-bit hex", d.ID)
	}
	return d, err
}

const (
	allowAll     = "package envoy.authz\n\nallow := true\n"
	allowIfAdmin = "package envoy.authz\n\ndefault allow := false\n\nallow if input.user == \"admin\"\n"
	syntaxError  = "package envoy.authz\n\nallow if {\n  input.x ==\n"
)

// TestReloadLifecycle walks one engine through the states a policy
// directory goes through while someone edits it.
func TestReloadLifecycle(t *testing.T) {
	e, dir, err := newTestEngine(t, map[string]string{"authz.rego": allowAll})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name        string
		files       map[string]string
		wantErr     string // regexp the reload error must match
		wantAllowed bool   // for input {"user": "bob"}
		wantReason  string
		sameRev     bool // revision must not change
		wantFiles   int
	}{
		{name: "initial", wantAllowed: true, sameRev: true, wantFiles: 1},
		{name: "syntax error keeps last good", files: map[string]string{"authz.rego": syntaxError},
			wantErr: `authz\.rego:\d+(:\d+)?: rego_parse_error`, wantAllowed: true, sameRev: true, wantFiles: 1},
		{name: "compile error keeps last good", files: map[string]string{"authz.rego": "package envoy.authz\n\nallow if x == 1\n"},
			wantErr: `authz\.rego:3:\d+: rego_unsafe_var_error`, wantAllowed: true, sameRev: true, wantFiles: 1},
		{name: "good edit applies", files: map[string]string{"authz.rego": allowIfAdmin}, wantAllowed: false, wantFiles: 1},
		{name: "second file with error names that file", files: map[string]string{"sub/extra.rego": "package envoy.authz\n\nfoo := \n"},
			wantErr: `sub/extra\.rego:\d+(:\d+)?: rego_parse_error`, wantAllowed: false, sameRev: true, wantFiles: 1},
		{name: "fixed second file loads", files: map[string]string{"sub/extra.rego": "package envoy.authz\n\nfoo := 1\n"}, wantAllowed: false, wantFiles: 2},
		{name: "test files and hidden files are not served", files: map[string]string{
			"authz_test.rego": syntaxError, ".#authz.rego": syntaxError, ".git/x.rego": syntaxError, "notes.txt": "x",
		}, wantAllowed: false, sameRev: true, wantFiles: 2},
		{name: "delete all rego denies everything", files: map[string]string{"authz.rego": "", "sub/extra.rego": ""},
			wantAllowed: false, wantReason: "no policy loaded", wantFiles: 0},
		{name: "back to allow", files: map[string]string{"authz.rego": allowAll}, wantAllowed: true, wantFiles: 1},
	}
	prev := e.Status()
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			writeFiles(t, dir, st.files)
			err := e.Reload(t.Context())
			status := e.Status()
			if st.wantErr != "" {
				if err == nil {
					t.Fatalf("Reload succeeded, want error matching %q", st.wantErr)
				}
				if !regexp.MustCompile(st.wantErr).MatchString(err.Error()) {
					t.Errorf("Reload error %q does not match %q", err, st.wantErr)
				}
				if status.LastError != err.Error() || status.LastErrorAt.IsZero() {
					t.Errorf("status did not record the error: %+v", status)
				}
			} else {
				if err != nil {
					t.Fatalf("Reload: %v", err)
				}
				if status.LastError != "" {
					t.Errorf("LastError not cleared: %q", status.LastError)
				}
			}
			if st.sameRev != (status.Revision == prev.Revision) {
				t.Errorf("revision %q → %q, want unchanged=%v", prev.Revision, status.Revision, st.sameRev)
			}
			if len(status.Files) != st.wantFiles {
				t.Errorf("status files %v, want %d", status.Files, st.wantFiles)
			}
			d, evalErr := eval(t, e, `{"user": "bob"}`)
			if d.Allowed != st.wantAllowed {
				t.Errorf("allowed = %v, want %v (reason %q)", d.Allowed, st.wantAllowed, d.Reason)
			}
			if st.wantReason != "" {
				if d.Reason != st.wantReason || !errors.Is(evalErr, ErrNoPolicy) {
					t.Errorf("reason %q err %v, want %q / ErrNoPolicy", d.Reason, evalErr, st.wantReason)
				}
			} else if evalErr != nil {
				t.Errorf("Evaluate: %v", evalErr)
			}
			if d.Revision != status.Revision {
				t.Errorf("decision revision %q, status revision %q", d.Revision, status.Revision)
			}
			prev = status
		})
	}
}

func TestNewWithoutPolicy(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		dir     string // overrides the temp dir
		wantErr bool
	}{
		{name: "empty directory", files: nil},
		{name: "only tests and data", files: map[string]string{"x_test.rego": allowAll, "data.json": `{"a":1}`}},
		{name: "first load fails", files: map[string]string{"authz.rego": syntaxError}, wantErr: true},
		{name: "missing directory", dir: "/nonexistent/gatehouse/policies", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []Option{}
			if tt.dir != "" {
				opts = append(opts, WithDir(tt.dir))
			}
			e, _, err := newTestEngine(t, tt.files, opts...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New error = %v, wantErr %v", err, tt.wantErr)
			}
			d, err := eval(t, e, `{}`)
			if d.Allowed || d.Reason != "no policy loaded" || !errors.Is(err, ErrNoPolicy) {
				t.Errorf("got %+v, %v; want deny with no policy loaded", d, err)
			}
		})
	}
	if _, err := New(t.Context(), WithQuery("data.x["), WithDir(t.TempDir())); err == nil {
		t.Error("bad query: want error")
	}
}

// TestFailClosed: anything but a well-formed result from a successful
// evaluation is a deny with a reason.
func TestFailClosed(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	// 10^8 iterations take seconds; the deadline ends them long before.
	const slowPolicy = "package envoy.authz\n\nallow if count([1 | some x in numbers.range(1, 10000); some y in numbers.range(1, 10000)]) > 0\n"
	tests := []struct {
		name    string
		policy  string
		query   string
		ctx     context.Context
		timeout time.Duration // evaluation deadline, set just before Evaluate
		wantErr error
		reason  string // substring of Decision.Reason
	}{
		{name: "undefined", policy: "package envoy.authz\n\nallow if input.never\n", wantErr: ErrUndefined, reason: "undefined"},
		{name: "no such rule", policy: "package other\n\nx := 1\n", wantErr: ErrUndefined, reason: "undefined"},
		{name: "strict builtin error", policy: "package envoy.authz\n\nallow if to_number(input.user) > 0\n", wantErr: ErrEval, reason: "to_number"},
		{name: "division by zero", policy: "package envoy.authz\n\nallow if 1 / input.zero > 0\n", wantErr: ErrEval, reason: "eval_builtin_error: div at "},
		{name: "conflicting outputs", policy: "package envoy.authz\n\nallow := true if input.user\nallow := false if input.user\n", wantErr: ErrEval, reason: "conflict"},
		{name: "string result", policy: "package envoy.authz\n\nallow := \"yes\"\n", wantErr: ErrInvalidResult, reason: "string"},
		{name: "number result", policy: "package envoy.authz\n\nallow := 1\n", wantErr: ErrInvalidResult, reason: "number"},
		{name: "object without allowed", policy: "package envoy.authz\n\nallow := {\"headers\": {}}\n", wantErr: ErrInvalidResult, reason: "allowed"},
		{name: "allowed not boolean", policy: "package envoy.authz\n\nallow := {\"allowed\": \"true\"}\n", wantErr: ErrInvalidResult, reason: "allowed"},
		{name: "bad header value", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x\": 1}}\n", wantErr: ErrInvalidResult, reason: "header"},
		{name: "bad header array", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x\": [\"a\", 1]}}\n", wantErr: ErrInvalidResult, reason: "header"},
		{name: "header name with newline", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x\\ny\": \"a\"}}\n", wantErr: ErrInvalidResult, reason: "header name"},
		{name: "headers not object", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": [\"x\"]}\n", wantErr: ErrInvalidResult, reason: "headers"},
		{name: "status as string", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"http_status\": \"403\"}\n", wantErr: ErrInvalidResult, reason: "http_status"},
		{name: "status not http", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"http_status\": 999}\n", wantErr: ErrInvalidResult, reason: "http_status"},
		{name: "status fractional", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"http_status\": 200.5}\n", wantErr: ErrInvalidResult, reason: "http_status"},
		{name: "body not string", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"body\": {}}\n", wantErr: ErrInvalidResult, reason: "body"},
		{name: "remove headers not array", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"request_headers_to_remove\": \"x\"}\n", wantErr: ErrInvalidResult, reason: "request_headers_to_remove"},
		{name: "metadata not object", policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"dynamic_metadata\": []}\n", wantErr: ErrInvalidResult, reason: "dynamic_metadata"},
		{name: "multiple results", policy: "package envoy.authz\n\nallowed contains true\nallowed contains false\n", query: "x := data.envoy.authz.allowed[_]", wantErr: ErrInvalidResult, reason: "2 results"},
		{name: "canceled context", policy: allowAll, ctx: canceled, wantErr: ErrEval, reason: "canceled"},
		{name: "deadline during evaluation", policy: slowPolicy, timeout: 50 * time.Millisecond, wantErr: ErrEval, reason: "cancel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []Option
			if tt.query != "" {
				opts = append(opts, WithQuery(tt.query))
			}
			e, _, err := newTestEngine(t, map[string]string{"p.rego": tt.policy}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx := tt.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			d, err := e.Evaluate(ctx, mustJSONValue(t, `{"user": "bob", "zero": 0}`))
			if d == nil || d.Allowed {
				t.Fatalf("decision %+v, want deny", d)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q does not mention %q", d.Reason, tt.reason)
			}
			if d.Revision == "" || len(d.Headers) != 0 {
				t.Errorf("deny decision %+v should carry revision and nothing else", d)
			}
		})
	}
}

func TestResultForms(t *testing.T) {
	tests := []struct {
		name   string
		result string // Rego expression assigned to allow
		want   Decision
	}{
		{name: "true", result: "true", want: Decision{Allowed: true}},
		{name: "false", result: "false", want: Decision{}},
		{name: "minimal object", result: `{"allowed": true}`, want: Decision{Allowed: true}},
		{name: "full object", result: `{
			"allowed": true,
			"headers": {"x-user": "bob", "x-roles": ["a", "b"]},
			"request_headers_to_remove": ["authorization", "cookie"],
			"query_parameters_to_remove": ["token"],
			"response_headers_to_add": {"x-decision": "ok"},
			"dynamic_metadata": {"subject": "bob", "n": 3, "nested": {"l": [1, "x"]}},
			"reason": "role reader",
			"unknown_key": {"ignored": true},
		}`, want: Decision{
			Allowed:           true,
			Headers:           []Header{{"x-roles", "a"}, {"x-roles", "b"}, {"x-user", "bob"}},
			RemoveHeaders:     []string{"authorization", "cookie"},
			RemoveQueryParams: []string{"token"},
			ResponseHeaders:   []Header{{"x-decision", "ok"}},
			DynamicMetadata:   map[string]any{"subject": "bob", "n": 3.0, "nested": map[string]any{"l": []any{1.0, "x"}}},
			Reason:            "role reader",
		}},
		{name: "deny with body and status", result: `{"allowed": false, "http_status": 401, "body": "login first", "headers": {"www-authenticate": "Bearer"}}`,
			want: Decision{HTTPStatus: 401, Body: "login first", Headers: []Header{{"www-authenticate", "Bearer"}}}},
		{name: "set of headers to remove", result: `{"allowed": true, "request_headers_to_remove": {"cookie"}}`,
			want: Decision{Allowed: true, RemoveHeaders: []string{"cookie"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, err := newTestEngine(t, map[string]string{"p.rego": "package envoy.authz\n\nallow := " + tt.result + "\n"})
			if err != nil {
				t.Fatal(err)
			}
			d, err := eval(t, e, `{}`)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.ID, want.Revision = d.ID, e.Status().Revision
			if !decisionsEqual(*d, want) {
				t.Errorf("decision\n got %+v\nwant %+v", *d, want)
			}
		})
	}
}

func decisionsEqual(a, b Decision) bool {
	aj, bj := ast.MustInterfaceToValue(a), ast.MustInterfaceToValue(b)
	return aj.Compare(bj) == 0
}

func TestDecisionIDsDiffer(t *testing.T) {
	e, _, err := newTestEngine(t, map[string]string{"p.rego": allowAll})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 100 {
		d, _ := eval(t, e, `{}`)
		if seen[d.ID] {
			t.Fatalf("decision id %s repeated", d.ID)
		}
		seen[d.ID] = true
	}
}

func TestQueryAndData(t *testing.T) {
	const policy = `package gatehouse.authz

decision := {"allowed": input.user in data.users.allowed, "headers": {"x-env": data.env}}
`
	tests := []struct {
		name      string
		files     map[string]string
		data      map[string]any
		user      string
		wantAllow bool
		wantErr   string
	}{
		{name: "data.json", files: map[string]string{"data.json": `{"users": {"allowed": ["bob"]}, "env": "prod"}`}, user: "bob", wantAllow: true},
		{name: "data.yaml", files: map[string]string{"data.yaml": "users:\n  allowed: [bob]\nenv: prod\n"}, user: "eve"},
		{name: "WithData merged with file", files: map[string]string{"data.json": `{"env": "prod"}`},
			data: map[string]any{"users": map[string]any{"allowed": []any{"bob"}}}, user: "bob", wantAllow: true},
		{name: "sub-directory data ignored", files: map[string]string{"data.json": `{"env": "prod", "users": {"allowed": []}}`, "sub/data.json": `{"users": {"allowed": ["bob"]}}`}, user: "bob"},
		{name: "conflicting data", files: map[string]string{"data.json": `{"env": "prod", "users": {"allowed": []}}`},
			data: map[string]any{"env": "dev"}, wantErr: "data /env defined twice"},
		{name: "bad data file", files: map[string]string{"data.json": `{"env": `}, wantErr: "data.json: parsing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"authz.rego": policy}
			for k, v := range tt.files {
				files[k] = v
			}
			e, _, err := newTestEngine(t, files, WithQuery("data.gatehouse.authz.decision"), WithData(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d, err := eval(t, e, `{"user": "`+tt.user+`"}`)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.wantAllow || len(d.Headers) != 1 || d.Headers[0] != (Header{"x-env", "prod"}) {
				t.Errorf("decision %+v, want allowed=%v with x-env: prod", d, tt.wantAllow)
			}
		})
	}
}

// TestConcurrentEvaluateDuringReload flips the policy between two versions
// while evaluations run; every decision must be consistent with the revision
// that made it, and none may fail. Run with -race.
func TestConcurrentEvaluateDuringReload(t *testing.T) {
	const (
		verA = "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x-rev\": \"a\"}}\n"
		verB = "package envoy.authz\n\nallow := {\"allowed\": false, \"headers\": {\"x-rev\": \"b\"}}\n"
	)
	e, dir, err := newTestEngine(t, map[string]string{"p.rego": verA})
	if err != nil {
		t.Fatal(err)
	}
	revA := e.Status().Revision

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			input := mustJSONValue(t, `{}`)
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := e.Evaluate(context.Background(), input)
				if err != nil {
					errs <- err
					return
				}
				wantRev := "b"
				if d.Revision == revA {
					wantRev = "a"
				}
				if d.Allowed != (wantRev == "a") || len(d.Headers) != 1 || d.Headers[0].Value != wantRev {
					errs <- errors.New("decision inconsistent with its revision")
					return
				}
			}
		})
	}
	for i := range 30 {
		v := verA
		if i%2 == 0 {
			v = verB
		}
		writeFiles(t, dir, map[string]string{"p.rego": v})
		if err := e.Reload(t.Context()); err != nil {
			t.Error(err)
		}
		if i%3 == 0 { // a broken edit in between must not disturb anyone
			writeFiles(t, dir, map[string]string{"p.rego": syntaxError})
			if err := e.Reload(t.Context()); err == nil {
				t.Error("broken policy loaded")
			}
		}
		_ = e.Status()
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // regexps, one per expected error
	}{
		{name: "clean", files: map[string]string{"a.rego": allowAll, "a_test.rego": "package envoy.authz_test\n\ntest_ok if true\n"}},
		{name: "empty directory", files: map[string]string{}},
		{name: "parse and test-file errors all reported", files: map[string]string{
			"a.rego": syntaxError, "b_test.rego": "package t\n\ntest_x if {\n",
		}, want: []string{`a\.rego:\d+(:\d+)?: rego_parse_error`, `b_test\.rego:\d+(:\d+)?: rego_parse_error`}},
		{name: "safety errors with location", files: map[string]string{
			"a.rego": "package envoy.authz\n\nallow if y == 1\n\nz if w > 1\n",
		}, want: []string{`a\.rego:3:10: rego_unsafe_var_error: var y is unsafe`, `a\.rego:5:6: rego_unsafe_var_error: var w is unsafe`}},
		{name: "type errors with location", files: map[string]string{
			"a.rego": "package envoy.authz\n\nallow if nosuch.fn(1)\n",
		}, want: []string{`a\.rego:3:10: rego_type_error: undefined function nosuch.fn`}},
		{name: "v0 syntax rejected", files: map[string]string{"a.rego": "package envoy.authz\n\nallow { true }\n"},
			want: []string{`a\.rego:3:\d+: rego_parse_error`}},
		{name: "comment-only file", files: map[string]string{"a.rego": "# nothing\n"}, want: []string{`a\.rego: rego_parse_error: empty module`}},
		{name: "bad data", files: map[string]string{"data.json": "[1"}, want: []string{`data\.json: parsing data`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			errs := Check(dir)
			if len(errs) != len(tt.want) {
				t.Fatalf("Check = %v, want %d errors", errs, len(tt.want))
			}
			for _, re := range tt.want {
				found := false
				for _, err := range errs {
					found = found || regexp.MustCompile(re).MatchString(err.Error())
				}
				if !found {
					t.Errorf("no error matches %q in %v", re, errs)
				}
			}
		})
	}
	if errs := Check(filepath.Join(t.TempDir(), "missing")); len(errs) != 1 {
		t.Errorf("missing dir: %v", errs)
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"p.rego": allowIfAdmin,
		"p_test.rego": `package envoy.authz_test

import data.envoy.authz

test_admin if authz.allow with input as {"user": "admin"}

test_wrong if authz.allow with input as {"user": "bob"}

test_error if to_number("x") == 1

todo_test_later if false
`,
	})
	passed, failed, results, err := RunTests(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if passed != 1 || failed != 2 || len(results) != 4 {
		t.Errorf("passed=%d failed=%d results=%d, want 1, 2, 4", passed, failed, len(results))
	}
	writeFiles(t, dir, map[string]string{"p_test.rego": syntaxError})
	if _, _, _, err := RunTests(t.Context(), dir); err == nil || !strings.Contains(err.Error(), "p_test.rego:") {
		t.Errorf("broken test file: err = %v, want it named", err)
	}
}
