package extauthz

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// The ref* functions are the response building as it was before the fast
// paths (maps, sorting, structpb.NewStruct, strings.Map): the tests below
// hold the fast paths to give exactly their answers.

func refCleanHeaderValue(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, v)
}

func refOverwrite(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: refCleanHeaderValue(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// refPolicyHeaders: the first value of a name overwrites, later ones append.
func refPolicyHeaders(hs []policy.Header, skip func(string) bool) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	seen := map[string]bool{}
	for _, ph := range hs {
		name := strings.ToLower(ph.Name)
		if skip != nil && skip(name) {
			continue
		}
		o := refOverwrite(name, ph.Value)
		if seen[name] {
			o.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
		seen[name] = true
		out = append(out, o)
	}
	return out
}

func refMetadata(d *policy.Decision) *structpb.Struct {
	if d == nil {
		return nil
	}
	m := map[string]any{}
	for k, v := range d.DynamicMetadata {
		m[k] = v
	}
	m["decision_id"] = d.ID
	if d.Revision != "" {
		m["policy_revision"] = d.Revision
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		st, _ = structpb.NewStruct(map[string]any{"decision_id": d.ID})
	}
	return st
}

func refAllow(h HeaderOptions, req *authv3.CheckRequest, id *identity.Identity, d *policy.Decision, up map[string]string) *authv3.CheckResponse {
	set := map[string]string{}
	for k, v := range up {
		if v != "" {
			set[h.Prefix+k] = v
		}
	}
	if id != nil {
		put := func(k, v string) {
			if v != "" {
				set[h.Prefix+k] = v
			}
		}
		put(hdrSubject, id.Subject)
		put(hdrIssuer, id.Issuer)
		put(hdrKind, string(id.Kind))
		put(hdrRoles, strings.Join(id.Roles, ","))
		put(hdrGroups, strings.Join(id.Groups, ","))
		put(hdrEmail, id.Email)
		put(hdrSPIFFEID, id.SPIFFEID)
		put(hdrVerifiedBy, string(id.Method))
	}
	set[h.Prefix+hdrDecisionID] = d.ID
	ok := &authv3.OkHttpResponse{}
	ok.Headers = refPolicyHeaders(d.Headers, func(name string) bool {
		_, ours := set[name]
		return strings.HasPrefix(name, h.Prefix) && ours
	})
	for _, k := range slices.Sorted(maps.Keys(set)) {
		v := set[k]
		if len(v) > maxHeaderValue {
			v = v[:maxHeaderValue] // identity values are cut
		}
		ok.Headers = append(ok.Headers, refOverwrite(k, v))
	}
	remove := map[string]bool{}
	for name := range req.GetAttributes().GetRequest().GetHttp().GetHeaders() {
		name = strings.ToLower(name)
		if strings.HasPrefix(name, h.Prefix) && set[name] == "" && !policySets(d, name) {
			remove[name] = true
		}
	}
	if h.StripAuthorization {
		remove["authorization"] = true
	}
	for _, name := range d.RemoveHeaders {
		remove[strings.ToLower(name)] = true
	}
	if len(remove) > 0 {
		ok.HeadersToRemove = slices.Sorted(maps.Keys(remove))
	}
	ok.ResponseHeadersToAdd = refPolicyHeaders(d.ResponseHeaders, nil)
	ok.QueryParametersToRemove = d.RemoveQueryParams
	for _, q := range d.SetQueryParams {
		ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Key, Value: q.Value})
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: refMetadata(d),
	}
}

func refDeny(d *policy.Decision, out outcome) *authv3.CheckResponse {
	status := out.status
	if status < 300 || status > 599 {
		status = http.StatusForbidden
	}
	denied := &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode(status)}}
	decisionID := ""
	if d != nil {
		decisionID = d.ID
	}
	if d != nil && d.Body != "" {
		denied.Body = d.Body
	} else {
		denied.Body = refDenyBody(status, decisionID)
		denied.Headers = append(denied.Headers, refOverwrite("content-type", "application/json"))
	}
	if status == http.StatusUnauthorized {
		challenge := `Bearer`
		if out.invalidToken {
			challenge = `Bearer error="invalid_token"`
		}
		denied.Headers = append(denied.Headers, refOverwrite("www-authenticate", challenge))
	}
	if d != nil {
		denied.Headers = append(denied.Headers, refPolicyHeaders(d.Headers, nil)...)
	}
	grpcCode := code.Code_PERMISSION_DENIED
	if status == http.StatusUnauthorized {
		grpcCode = code.Code_UNAUTHENTICATED
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(grpcCode)},
		HttpResponse:    &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
		DynamicMetadata: refMetadata(d),
	}
}

func refDenyBody(status int, decisionID string) string {
	msg := map[string]string{"error": strings.ToLower(http.StatusText(status))}
	if decisionID != "" {
		msg["decision_id"] = decisionID
	}
	b, _ := json.Marshal(msg)
	return string(b)
}

// headerValues are values that exercise cleanHeaderValue: controls, DEL,
// tabs, UTF-8 (valid, invalid, cut at the length limit) and C1 controls,
// which Envoy accepts.
func headerValues() []string {
	return []string{
		"", "plain", "with space", "tab\tinside", "crlf\r\nX-Injected: 1", "nul\x00byte", "del\x7f", "\x1f\x01",
		"caf\u00e9", "\u00e9\r\n", "bad \xff utf8", "\xc3", "c1 \u0085 control", "\u2028 line separator",
		strings.Repeat("a", maxHeaderValue+10),
		strings.Repeat("a", maxHeaderValue-1) + "\u00e9", // cut inside the rune
		strings.Repeat("\u00e9", maxHeaderValue),
		strings.Repeat("a\n", maxHeaderValue),
	}
}

func TestCleanHeaderValue(t *testing.T) {
	pinned := map[string]string{
		"plain":                 "plain",
		"tab\tinside":           "tab\tinside",
		"crlf\r\nX-Injected: 1": "crlfX-Injected: 1",
		"nul\x00byte":           "nulbyte",
		"del\x7f":               "del",
		"\x1f\x01":              "",
		"bad \xff utf8":         "bad \ufffd utf8",
		"c1 \u0085 control":     "c1 \u0085 control",
		"caf\u00e9":             "caf\u00e9",
		"\u00e9\r\n":            "\u00e9",
		"\u2028 line separator": "\u2028 line separator",
	}
	for _, v := range headerValues() {
		got := cleanHeaderValue(v)
		if want := refCleanHeaderValue(v); got != want {
			t.Errorf("cleanHeaderValue(%.40q) = %.40q, want %.40q", v, got, want)
		}
		if want, ok := pinned[v]; ok && got != want {
			t.Errorf("cleanHeaderValue(%q) = %q, want %q", v, got, want)
		}
		if len(got) < len(v) && !strings.ContainsAny(v, "\r\n\x00\x7f\x01\x1f") {
			t.Errorf("cleanHeaderValue(%.40q) cut %d bytes to %d: values are never shortened", v, len(v), len(got))
		}
	}
}

func TestLowerHasPrefix(t *testing.T) {
	names := []string{
		"", "x", "x-gatehouse", "x-gatehouse-", "x-gatehouse-subject", "X-Gatehouse-Subject", "X-GATEHOUSE-ROLES",
		"x-gatehousE-anything", "x-gatehouse_subject", "content-type", "x-request-id", ":authority",
		"\u0130x-gatehouse-", "x-gatehouse-\u0130", "X-\u0130", "\u023ax", "\u023a", "x-g\u00e4tehouse-", "\xffx-gatehouse-",
		"x-\u212aey", // KELVIN SIGN lower-cases to ASCII k
	}
	prefixes := []string{"x-gatehouse-", "x-", "", "X-Gatehouse-", "x-\u2c65", "x-key", "\u0069\u0307x"}
	for _, p := range prefixes {
		for _, n := range names {
			lower, ok := lowerHasPrefix(n, p)
			want := strings.ToLower(n)
			wantOK := strings.HasPrefix(want, p)
			if ok != wantOK || ok && lower != want {
				t.Errorf("lowerHasPrefix(%q, %q) = %q, %v; want %q, %v", n, p, lower, ok, want, wantOK)
			}
		}
	}
}

func TestDenyBody(t *testing.T) {
	ids := []string{"", "0123456789abcdef0123456789abcdef", `quote"`, `back\slash`, "<html>&amp;", "caf\u00e9", "nul\x00", "\xff", "tab\t"}
	for status := 300; status <= 599; status++ {
		for _, id := range ids {
			if got, want := denyBody(status, id), refDenyBody(status, id); got != want {
				t.Errorf("denyBody(%d, %q) = %s, want %s", status, id, got, want)
			}
		}
	}
	if got, want := denyBody(401, "abc"), `{"decision_id":"abc","error":"unauthorized"}`; got != want {
		t.Errorf("denyBody = %s, want %s", got, want)
	}
}

// metadataDecisions are decisions whose metadata exercise every branch:
// the policy's own keys, ours overriding them, values and keys structpb
// cannot hold, and ids and revisions that are not valid UTF-8.
func metadataDecisions() map[string]*policy.Decision {
	return map[string]*policy.Decision{
		"nil":           nil,
		"id only":       {ID: "d1"},
		"empty id":      {},
		"with revision": {ID: "d1", Revision: "r7"},
		"policy metadata": {ID: "d1", Revision: "r7", DynamicMetadata: map[string]any{
			"rule": "public", "n": json.Number("3"), "f": 1.5, "b": true, "null": nil,
			"list": []any{"a", 1.0, map[string]any{"x": "y"}}, "obj": map[string]any{"k": []any{}},
		}},
		"policy sets ours":              {ID: "d1", Revision: "r7", DynamicMetadata: map[string]any{"decision_id": "forged", "policy_revision": "forged"}},
		"policy_revision without ours":  {ID: "d1", DynamicMetadata: map[string]any{"policy_revision": "policy's"}},
		"policy's ours not holdable":    {ID: "d1", Revision: "r7", DynamicMetadata: map[string]any{"decision_id": make(chan int), "policy_revision": "\xff"}},
		"policy_revision kept, invalid": {ID: "d1", DynamicMetadata: map[string]any{"policy_revision": "\xff"}},
		"invalid value":                 {ID: "d1", Revision: "r7", DynamicMetadata: map[string]any{"ok": "v", "bad": struct{}{}}},
		"invalid string value":          {ID: "d1", DynamicMetadata: map[string]any{"bad": "\xff"}},
		"invalid nested value":          {ID: "d1", DynamicMetadata: map[string]any{"obj": map[string]any{"bad": "\xc3"}}},
		"invalid key":                   {ID: "d1", DynamicMetadata: map[string]any{"\xff": "v"}},
		"NaN":                           {ID: "d1", DynamicMetadata: map[string]any{"nan": math.NaN()}},
		"invalid id":                    {ID: "\xff", Revision: "r7"},
		"invalid id, invalid value":     {ID: "\xff", DynamicMetadata: map[string]any{"bad": struct{}{}}},
		"invalid revision":              {ID: "d1", Revision: "\xff", DynamicMetadata: map[string]any{"rule": "x"}},
	}
}

func TestMetadata(t *testing.T) {
	for name, d := range metadataDecisions() {
		got, want := metadata(d), refMetadata(d)
		if (got == nil) != (want == nil) || !proto.Equal(got, want) {
			t.Errorf("%s: metadata = %v, want %v", name, got, want)
		}
	}
}

// TestAllowMatchesReference: the headers set, their order, the headers
// removed and the metadata of an allow are exactly as before, for
// identities, upstream headers, policy headers that try to forge ours, and
// client-sent headers under the prefix in any case.
func TestAllowMatchesReference(t *testing.T) {
	full := &identity.Identity{
		Kind: identity.KindUser, Subject: "alice", Issuer: "https://idp", Method: identity.MethodJWKS,
		Email: "alice@example.com", Roles: []string{"reader", "writer"}, Groups: []string{"eng"}, SPIFFEID: "spiffe://x/y",
	}
	ids := map[string]*identity.Identity{
		"anonymous": nil,
		"full":      full,
		"minimal":   {Kind: identity.KindPeer, Method: identity.MethodMTLS},
		"dirty":     {Kind: identity.KindUser, Subject: "eve\r\nx-gatehouse-roles: admin", Method: identity.MethodJWKS, Roles: []string{"a\x00b", strings.Repeat("r", 5000)}},
	}
	ups := map[string]map[string]string{
		"none":      nil,
		"assertion": {hdrAssertion: "tok.en.sig"},
		"sidecar":   {hdrAssertion: "tok.en.sig", hdrOnBehalfOfSubject: "alice", hdrOnBehalfOfRoles: "reader,writer"},
		"empty obo": {hdrAssertion: "tok.en.sig", hdrOnBehalfOfSubject: "", hdrOnBehalfOfRoles: ""},
	}
	decisions := map[string]*policy.Decision{
		"plain":    {Allowed: true, ID: "d1", Revision: "r1"},
		"empty id": {Allowed: true},
		"policy headers": {Allowed: true, ID: "d2",
			Headers: []policy.Header{
				{Name: "X-Tenant", Value: "acme"}, {Name: "X-Gatehouse-Subject", Value: "root"},
				{Name: "x-gatehouse-custom", Value: "ok"}, {Name: "x-gatehouse-email", Value: "forged"},
				{Name: "X-Gatehouse-Decision-Id", Value: "forged"}, {Name: "x-dirty", Value: "a\nb"},
			},
			RemoveHeaders:     []string{"X-Debug", "authorization", "x-debug", "Cookie"},
			ResponseHeaders:   []policy.Header{{Name: "Retry-After", Value: "1"}, {Name: "Set-Thing", Value: "v\r\n"}},
			RemoveQueryParams: []string{"token"},
			DynamicMetadata:   map[string]any{"rule": "r"},
		},
	}
	client := map[string]string{
		"x-gatehouse-subject": "root", "X-Gatehouse-Roles": "admin", "x-gatehouse-custom": "1", "X-GATEHOUSE-OTHER": "1",
		"x-gatehouse-decision-id": "0", "x-gatehouse-on-behalf-of-subject": "bob", "x-gatehouse-assertion": "forged",
		"x-gatehouse-\u0130": "1", "authorization": "Bearer x", "x-other": "1",
	}
	for _, strip := range []bool{false, true} {
		for _, prefix := range []string{"x-gatehouse-", "x-id-"} {
			s := New(nil, WithHeaders(HeaderOptions{Prefix: prefix, StripAuthorization: strip}))
			req := request("GET", "/", client)
			for in, id := range ids {
				for un, up := range ups {
					for dn, d := range decisions {
						name := fmt.Sprintf("strip=%v/%s/%s/%s/%s", strip, prefix, in, un, dn)
						u := upstream{assertion: up[hdrAssertion], onBehalfOfSubject: up[hdrOnBehalfOfSubject], onBehalfOfRoles: up[hdrOnBehalfOfRoles]}
						got, want := s.allow(req, id, d, u), refAllow(s.headers, req, id, d, up)
						if !proto.Equal(got, want) {
							t.Errorf("%s:\n got  %v\n want %v", name, got, want)
						}
					}
				}
			}
		}
	}
}

func TestDenyMatchesReference(t *testing.T) {
	decisions := metadataDecisions()
	decisions["body and headers"] = &policy.Decision{ID: "d3", Body: "slow down", Headers: []policy.Header{{Name: "Retry-After", Value: "1"}, {Name: "X-A", Value: "b\r\n"}}}
	decisions["headers, own body"] = &policy.Decision{ID: "d4", Headers: []policy.Header{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}, {Name: "C", Value: "3"}}}
	for name, d := range decisions {
		for _, status := range []int{0, 200, 301, 401, 403, 429, 503, 599, 600} {
			for _, invalid := range []bool{false, true} {
				out := outcome{status: status, invalidToken: invalid, reason: "r"}
				got, want := (&Server{}).deny(d, out), refDeny(d, out)
				if !proto.Equal(got, want) {
					t.Errorf("%s/%d/%v:\n got  %v\n want %v", name, status, invalid, got, want)
				}
			}
		}
	}
}

// TestSlotOrder: allow emits its headers in slot order without sorting; the
// slots must be in the order of their names.
func TestSlotOrder(t *testing.T) {
	sfx := slotSuffixes()
	if !slices.IsSorted(sfx[:]) {
		t.Fatalf("slot suffixes not sorted: %v", sfx)
	}
	if len(slices.Compact(slices.Clone(sfx[:]))) != numSlots || slices.Contains(sfx[:], "") {
		t.Fatalf("slot suffixes not distinct: %v", sfx)
	}
}
