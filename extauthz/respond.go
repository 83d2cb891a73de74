package extauthz

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gatehouse-proxy/gatehouse/extauthz/assertion"
	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// Identity header suffixes, after HeaderOptions.Prefix.
const (
	hdrSubject    = "subject"
	hdrIssuer     = "issuer"
	hdrKind       = "kind"
	hdrRoles      = "roles"
	hdrGroups     = "groups"
	hdrEmail      = "email"
	hdrSPIFFEID   = "spiffe-id"
	hdrVerifiedBy = "verified-by"
	hdrDecisionID = "decision-id"
	// On a sidecar hop with a verified assertion: whom the call is for.
	hdrOnBehalfOfSubject = "on-behalf-of-subject"
	hdrOnBehalfOfRoles   = "on-behalf-of-roles"
)

// maxHeaderValue bounds one identity header; long group lists are cut rather
// than letting one user's claims overflow Envoy's header limits.
const maxHeaderValue = 4096

// Header slots of allow, one per suffix, numbered in the byte order of the
// suffixes. Every full name shares HeaderOptions.Prefix, so this is also the
// order of the full names: allow emits its headers sorted without sorting.
const (
	slotAssertion = iota
	slotDecisionID
	slotEmail
	slotGroups
	slotIssuer
	slotKind
	slotOnBehalfOfRoles
	slotOnBehalfOfSubject
	slotRoles
	slotSPIFFEID
	slotSubject
	slotVerifiedBy
	numSlots
)

// slotSuffixes returns the header suffix of every slot.
func slotSuffixes() [numSlots]string {
	return [numSlots]string{
		slotAssertion:         hdrAssertion,
		slotDecisionID:        hdrDecisionID,
		slotEmail:             hdrEmail,
		slotGroups:            hdrGroups,
		slotIssuer:            hdrIssuer,
		slotKind:              hdrKind,
		slotOnBehalfOfRoles:   hdrOnBehalfOfRoles,
		slotOnBehalfOfSubject: hdrOnBehalfOfSubject,
		slotRoles:             hdrRoles,
		slotSPIFFEID:          hdrSPIFFEID,
		slotSubject:           hdrSubject,
		slotVerifiedBy:        hdrVerifiedBy,
	}
}

// slotNames returns the full header name of every slot under prefix.
func slotNames(prefix string) [numSlots]string {
	names := slotSuffixes()
	for i := range names {
		names[i] = prefix + names[i]
	}
	return names
}

// upstream are the headers an allowed request carries besides the identity,
// set by propagate: the assertion and whom the request is on behalf of.
type upstream struct {
	assertion         string
	onBehalfOfSubject string
	onBehalfOfRoles   string
}

// headerSet is what allow sets under the prefix: a slot is set when it has a
// value, and the decision id always is.
type headerSet struct {
	names *[numSlots]string
	vals  [numSlots]string
}

func (h *headerSet) isSet(i int) bool { return i == slotDecisionID || h.vals[i] != "" }

// get returns the value allow sets for the lower-case name, and whether it
// sets the name at all.
func (h *headerSet) get(name string) (string, bool) {
	for i := range h.names {
		if h.names[i] == name && h.isSet(i) {
			return h.vals[i], true
		}
	}
	return "", false
}

// allow builds the OK response: identity headers set (overwriting any the
// client sent), client-sent headers under our prefix that we do not set
// removed, and the policy's own headers and metadata.
func (s *Server) allow(req *authv3.CheckRequest, id *identity.Identity, d *policy.Decision, up upstream) *authv3.CheckResponse {
	set := headerSet{names: &s.slotNames}
	set.vals[slotAssertion] = up.assertion
	set.vals[slotOnBehalfOfSubject] = up.onBehalfOfSubject
	set.vals[slotOnBehalfOfRoles] = up.onBehalfOfRoles
	if id != nil {
		set.vals[slotSubject] = id.Subject
		set.vals[slotIssuer] = id.Issuer
		set.vals[slotKind] = string(id.Kind)
		set.vals[slotRoles] = listHeader(id.Roles)
		set.vals[slotGroups] = listHeader(id.Groups)
		set.vals[slotEmail] = id.Email
		set.vals[slotSPIFFEID] = id.SPIFFEID
		set.vals[slotVerifiedBy] = string(id.Method)
	}
	set.vals[slotDecisionID] = d.ID
	nset := 0
	for i := range numSlots {
		if set.isSet(i) {
			nset++
		}
	}

	r := &okResponse{}
	hs := newHeaderOptions(len(d.Headers) + nset + len(d.ResponseHeaders))
	ok := &r.ok
	if n := len(d.Headers) + nset; n <= len(r.headers) {
		ok.Headers = r.headers[:0:n]
	} else {
		ok.Headers = make([]*corev3.HeaderValueOption, 0, n)
	}
	// Policy headers first, identity headers last: policy cannot forge identity.
	ok.Headers = hs.appendPolicy(ok.Headers, d.Headers, func(name string) bool {
		if strings.HasPrefix(name, s.headers.Prefix) {
			_, ours := set.get(name)
			return ours
		}
		return false
	})
	for i := range numSlots {
		if set.isSet(i) {
			// Claims-built values are cut, not refused: one user's long
			// group list must not break their requests.
			ok.Headers = append(ok.Headers, hs.overwrite(s.slotNames[i], truncate(set.vals[i], maxHeaderValue)))
		}
	}
	remove := r.remove[:0]
	for name := range req.GetAttributes().GetRequest().GetHttp().GetHeaders() {
		// Envoy sends names in lower case; a caller reaching the authz port
		// directly may not, and header names are case-insensitive.
		name, ours := lowerHasPrefix(name, s.headers.Prefix)
		if !ours {
			continue
		}
		if v, _ := set.get(name); v == "" && !policySets(d, name) {
			remove = append(remove, name)
		}
	}
	if s.headers.StripAuthorization {
		remove = append(remove, "authorization")
	}
	for _, name := range d.RemoveHeaders {
		remove = append(remove, strings.ToLower(name))
	}
	switch {
	case len(remove) == 0:
		remove = nil
	case len(remove) > 1:
		slices.Sort(remove)
		remove = slices.Compact(remove)
	}
	ok.HeadersToRemove = remove
	if len(d.ResponseHeaders) > 0 {
		ok.ResponseHeadersToAdd = hs.appendPolicy(make([]*corev3.HeaderValueOption, 0, len(d.ResponseHeaders)), d.ResponseHeaders, nil)
	}
	ok.QueryParametersToRemove = d.RemoveQueryParams
	for _, q := range d.SetQueryParams {
		ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Key, Value: q.Value})
	}
	r.status.Code = int32(code.Code_OK)
	r.http.OkResponse = ok
	r.resp.Status, r.resp.HttpResponse = &r.status, &r.http
	r.resp.DynamicMetadata = metadataInto(&r.meta, &r.strs, d)
	return &r.resp
}

// okResponse is an allowed CheckResponse with its parts, allocated
// together; headers and remove back the usual short lists.
type okResponse struct {
	resp    authv3.CheckResponse
	status  rpcstatus.Status
	http    authv3.CheckResponse_OkResponse
	ok      authv3.OkHttpResponse
	meta    structpb.Struct
	strs    metadataStrings
	headers [12]*corev3.HeaderValueOption
	remove  [2]string
}

// deniedResponse is a denied CheckResponse with its parts, allocated
// together.
type deniedResponse struct {
	resp    authv3.CheckResponse
	status  rpcstatus.Status
	http    authv3.CheckResponse_DeniedResponse
	denied  authv3.DeniedHttpResponse
	code    typev3.HttpStatus
	meta    structpb.Struct
	strs    metadataStrings
	headers [3]*corev3.HeaderValueOption
}

// propagate adds the assertion to an allowed request. An edge signs the
// identity it decided on for the route's service; a sidecar passes a
// verified one on unchanged (its app may forward it along a chain rule) and
// names the user. Failing to mint denies: later hops must not see the
// request without the user it was allowed for.
func (s *Server) propagate(h hop, id *identity.Identity, obo *assertion.Assertion, d *policy.Decision, out *outcome) {
	switch {
	case h.sidecar && obo != nil:
		out.upstream = upstream{
			assertion:         obo.Token,
			onBehalfOfSubject: obo.Identity.Subject,
			onBehalfOfRoles:   listHeader(obo.Identity.Roles),
		}
	case !h.sidecar && s.minter != nil && h.service != "" && id != nil && id.Subject != "":
		tok, err := s.minter.Mint(assertion.Statement{Identity: id, Service: h.service, DecisionID: d.ID, PolicyRevision: d.Revision})
		switch {
		case errors.Is(err, assertion.ErrIdentityExpired):
			*out = outcome{status: http.StatusUnauthorized, reason: "unauthenticated: " + err.Error()}
		case err != nil:
			*out = outcome{status: http.StatusServiceUnavailable, reason: "cannot mint assertion: " + err.Error()}
		case len(tok) > maxHeaderValue:
			// Cutting it would only make the next hop refuse it.
			*out = outcome{status: http.StatusServiceUnavailable, reason: fmt.Sprintf("cannot mint assertion: %d bytes, over the %d-byte header limit", len(tok), maxHeaderValue)}
		default:
			out.upstream = upstream{assertion: tok}
		}
	}
}

// deny builds the denied response: status, a small JSON body that names the
// decision (so support can find it in the log) and nothing internal.
func (s *Server) deny(d *policy.Decision, out outcome) *authv3.CheckResponse {
	status := out.status
	if status < 300 || status > 599 {
		status = http.StatusForbidden
	}
	r := &deniedResponse{}
	r.code.Code = typev3.StatusCode(status)
	denied := &r.denied
	denied.Status = &r.code
	decisionID := ""
	var policyHeaders []policy.Header
	if d != nil {
		decisionID, policyHeaders = d.ID, d.Headers
	}
	ownBody := d == nil || d.Body == ""
	n := len(policyHeaders)
	if ownBody {
		n++
	}
	if status == http.StatusUnauthorized {
		n++
	}
	hs := newHeaderOptions(n)
	switch {
	case n > len(r.headers):
		denied.Headers = make([]*corev3.HeaderValueOption, 0, n)
	case n > 0:
		denied.Headers = r.headers[:0:n]
	}
	if ownBody {
		denied.Body = denyBody(status, decisionID)
		denied.Headers = append(denied.Headers, hs.overwrite("content-type", "application/json"))
	} else {
		denied.Body = d.Body
	}
	if status == http.StatusUnauthorized {
		challenge := `Bearer`
		if out.invalidToken {
			challenge = `Bearer error="invalid_token"`
		}
		denied.Headers = append(denied.Headers, hs.overwrite("www-authenticate", challenge))
	}
	denied.Headers = hs.appendPolicy(denied.Headers, policyHeaders, nil)
	grpcCode := code.Code_PERMISSION_DENIED
	if status == http.StatusUnauthorized {
		grpcCode = code.Code_UNAUTHENTICATED
	}
	r.status.Code = int32(grpcCode)
	r.http.DeniedResponse = denied
	r.resp.Status, r.resp.HttpResponse = &r.status, &r.http
	r.resp.DynamicMetadata = metadataInto(&r.meta, &r.strs, d)
	return &r.resp
}

// denyBody is the JSON body of a deny the policy gave no body for:
// {"decision_id": ..., "error": <lower-case status text>}, the decision id
// left out when empty. It is exactly what json.Marshal makes of that map;
// strings JSON would escape take that slower path.
func denyBody(status int, decisionID string) string {
	text := http.StatusText(status)
	if !jsonPlain(text) || !jsonPlain(decisionID) {
		msg := map[string]string{"error": strings.ToLower(text)}
		if decisionID != "" {
			msg["decision_id"] = decisionID
		}
		b, _ := json.Marshal(msg)
		return string(b)
	}
	var b strings.Builder
	b.Grow(len(`{"decision_id":"","error":""}`) + len(decisionID) + len(text))
	b.WriteByte('{')
	if decisionID != "" {
		b.WriteString(`"decision_id":"`)
		b.WriteString(decisionID)
		b.WriteString(`",`)
	}
	b.WriteString(`"error":"`)
	for i := 0; i < len(text); i++ {
		c := text[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	b.WriteString(`"}`)
	return b.String()
}

// jsonPlain reports whether encoding/json writes s inside quotes unchanged:
// printable ASCII other than the quote, the backslash and the HTML
// characters it escapes.
func jsonPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// metadata is the dynamic metadata Envoy attaches to the request (and can
// log): the policy's own, plus the decision id. It is what structpb.NewStruct
// makes of the policy's map with decision_id and policy_revision put in
// (only the decision id when the policy's values cannot be held), built
// without the intermediate map.
func metadata(d *policy.Decision) *structpb.Struct {
	return metadataInto(new(structpb.Struct), new(metadataStrings), d)
}

// metadataStrings hold the decision id and policy revision values of a
// metadata Struct.
type metadataStrings [2]stringValueBox

// metadataInto is metadata built in st, an empty Struct, with its own
// values in strs; it returns st, or another Struct or nil as metadata does.
func metadataInto(st *structpb.Struct, strs *metadataStrings, d *policy.Decision) *structpb.Struct {
	if d == nil {
		return nil
	}
	st.Fields = make(map[string]*structpb.Value, len(d.DynamicMetadata)+2)
	for k, v := range d.DynamicMetadata {
		if k == "decision_id" || k == "policy_revision" && d.Revision != "" {
			continue // replaced by ours below
		}
		pv, err := structValue(k, v)
		if err != nil {
			// The policy returned something structpb cannot hold; keep ours.
			return decisionIDOnly(d.ID)
		}
		st.Fields[k] = pv
	}
	id, ok := strs[0].set(d.ID)
	if !ok {
		return nil // what structpb.NewStruct makes of an id it cannot hold
	}
	st.Fields["decision_id"] = id
	if d.Revision != "" {
		rev, ok := strs[1].set(d.Revision)
		if !ok {
			return decisionIDOnly(d.ID)
		}
		st.Fields["policy_revision"] = rev
	}
	return st
}

// structValue converts one entry of a Struct as structpb.NewStruct does.
func structValue(k string, v any) (*structpb.Value, error) {
	if !utf8.ValidString(k) {
		return nil, fmt.Errorf("invalid UTF-8 in key %q", k)
	}
	if s, ok := v.(string); ok {
		if pv, ok := stringValue(s); ok {
			return pv, nil
		}
	}
	return structpb.NewValue(v)
}

func decisionIDOnly(id string) *structpb.Struct {
	v, ok := stringValue(id)
	if !ok {
		return nil
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{"decision_id": v}}
}

// stringValue is structpb.NewValue(s) for a string, in one allocation
// instead of two; false when s is not valid UTF-8, which NewValue refuses.
func stringValue(s string) (*structpb.Value, bool) {
	return new(stringValueBox).set(s)
}

// stringValueBox is a string Value with its oneof wrapper.
type stringValueBox struct {
	v structpb.Value
	k structpb.Value_StringValue
}

// set makes b the Value of s, as structpb.NewValue(s) does; false when s
// is not valid UTF-8.
func (b *stringValueBox) set(s string) (*structpb.Value, bool) {
	if !utf8.ValidString(s) {
		return nil, false
	}
	b.k.StringValue = s
	b.v.Kind = &b.k
	return &b.v, true
}

// headerOptions hands out the HeaderValueOptions of one response from a
// block allocated once, instead of two allocations per header.
type headerOptions struct {
	free []headerOption
}

type headerOption struct {
	opt corev3.HeaderValueOption
	val corev3.HeaderValue
}

func newHeaderOptions(n int) headerOptions {
	if n <= 0 {
		return headerOptions{}
	}
	return headerOptions{free: make([]headerOption, n)}
}

// overwrite is overwrite(k, v) from the block (a fresh allocation once the
// block is used up).
func (h *headerOptions) overwrite(k, v string) *corev3.HeaderValueOption {
	return h.option(k, v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
}

func (h *headerOptions) option(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	if len(h.free) == 0 {
		return newHeaderOption(k, v, action)
	}
	o := &h.free[0]
	h.free = h.free[1:]
	o.val.Key, o.val.Value = k, cleanHeaderValue(v)
	o.opt.Header, o.opt.AppendAction = &o.val, action
	return &o.opt
}

// appendPolicy appends a policy's headers to dst, names lower-cased, except
// those skip refuses. A name's first value replaces what the request (or
// response) has, so a policy header is never merged with a client's forged
// one; its later values are added beside it, as opa-envoy-plugin sends
// every value of an array.
func (h *headerOptions) appendPolicy(dst []*corev3.HeaderValueOption, headers []policy.Header, skip func(name string) bool) []*corev3.HeaderValueOption {
	for i, ph := range headers {
		name := strings.ToLower(ph.Name)
		if skip != nil && skip(name) {
			continue
		}
		action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		for _, prev := range headers[:i] {
			if strings.EqualFold(prev.Name, ph.Name) {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
				break
			}
		}
		dst = append(dst, h.option(name, ph.Value, action))
	}
	return dst
}

func overwrite(k, v string) *corev3.HeaderValueOption {
	return newHeaderOption(k, v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
}

func newHeaderOption(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: cleanHeaderValue(v)}, AppendAction: action}
}

// truncate cuts v to at most n bytes.
func truncate(v string, n int) string {
	if len(v) > n {
		return v[:n]
	}
	return v
}

// cleanHeaderValue drops bytes Envoy rejects in header values (CR, LF, NUL
// and other controls): a claim must not be able to inject a header. It
// does not shorten: a cut token or cookie is a corrupt one.
func cleanHeaderValue(v string) string {
	if headerValueClean(v) {
		return v
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, v)
}

// headerValueClean reports whether cleanHeaderValue would return v as it
// is: printable ASCII and tabs only. Anything else, including valid UTF-8,
// takes the strings.Map path, which also turns invalid UTF-8 into U+FFFD.
func headerValueClean(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

// lowerHasPrefix is strings.HasPrefix(strings.ToLower(name), prefix),
// returning the lower-cased name when true. Most names are told apart in
// their first bytes without lower-casing them whole: while those bytes are
// ASCII, each lower-cases to one byte at the same offset.
func lowerHasPrefix(name, prefix string) (string, bool) {
	for i := 0; i < len(prefix); i++ {
		if i == len(name) {
			return "", false // all ASCII: lower-casing keeps the length
		}
		c := name[i]
		if c >= utf8.RuneSelf {
			lower := strings.ToLower(name)
			return lower, strings.HasPrefix(lower, prefix)
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return "", false
		}
	}
	return strings.ToLower(name), true
}

func policySets(d *policy.Decision, name string) bool {
	for _, h := range d.Headers {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	return false
}

// listEscaper keeps a list header unambiguous: names are joined with ","
// (as HTTP joins repeated headers), so a "," inside a name (an LDAP DN
// group) is sent as %2C and "%" as %25. Without it ["eng,admin"] and
// ["eng", "admin"] would give the same header, and an upstream splitting
// it would see a role nobody was given.
var listEscaper = strings.NewReplacer("%", "%25", ",", "%2C")

// listHeader joins names for an x-gatehouse-* list header.
func listHeader(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		if !strings.ContainsAny(names[0], "%,") {
			return names[0]
		}
	}
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		if strings.ContainsAny(n, "%,") {
			n = listEscaper.Replace(n)
		}
		b.WriteString(n)
	}
	return b.String()
}
