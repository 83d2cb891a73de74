package extauthz

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

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

// allow builds the OK response: identity headers set (overwriting any the
// client sent), client-sent headers under our prefix that we do not set
// removed, and the policy's own headers and metadata.
func (s *Server) allow(req *authv3.CheckRequest, id *identity.Identity, d *policy.Decision, upstream map[string]string) *authv3.CheckResponse {
	set := map[string]string{}
	for k, v := range upstream {
		if v != "" {
			set[s.headers.Prefix+k] = v
		}
	}
	if id != nil {
		p := s.headers.Prefix
		put := func(k, v string) {
			if v != "" {
				set[p+k] = v
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
	set[s.headers.Prefix+hdrDecisionID] = d.ID

	ok := &authv3.OkHttpResponse{}
	// Policy headers first, identity headers last: policy cannot forge identity.
	for _, h := range d.Headers {
		name := strings.ToLower(h.Name)
		if strings.HasPrefix(name, s.headers.Prefix) {
			if _, ours := set[name]; ours {
				continue
			}
		}
		ok.Headers = append(ok.Headers, overwrite(name, h.Value))
	}
	for _, k := range sortedKeys(set) {
		ok.Headers = append(ok.Headers, overwrite(k, set[k]))
	}
	remove := map[string]bool{}
	for name := range req.GetAttributes().GetRequest().GetHttp().GetHeaders() {
		// Envoy sends names in lower case; a caller reaching the authz port
		// directly may not, and header names are case-insensitive.
		name = strings.ToLower(name)
		if strings.HasPrefix(name, s.headers.Prefix) && set[name] == "" && !policySets(d, name) {
			remove[name] = true
		}
	}
	if s.headers.StripAuthorization {
		remove["authorization"] = true
	}
	for _, name := range d.RemoveHeaders {
		remove[strings.ToLower(name)] = true
	}
	ok.HeadersToRemove = sortedKeys(remove)
	for _, h := range d.ResponseHeaders {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, overwrite(strings.ToLower(h.Name), h.Value))
	}
	ok.QueryParametersToRemove = d.RemoveQueryParams
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: metadata(d),
	}
}

// propagate adds the assertion to an allowed request. An edge signs the
// identity it decided on for the route's service; a sidecar passes a
// verified one on unchanged (its app may forward it along a chain rule) and
// names the user. Failing to mint denies: later hops must not see the
// request without the user it was allowed for.
func (s *Server) propagate(h hop, id *identity.Identity, obo *assertion.Assertion, d *policy.Decision, out *outcome) {
	switch {
	case h.sidecar && obo != nil:
		out.upstream = map[string]string{
			hdrAssertion:         obo.Token,
			hdrOnBehalfOfSubject: obo.Identity.Subject,
			hdrOnBehalfOfRoles:   strings.Join(obo.Identity.Roles, ","),
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
			out.upstream = map[string]string{hdrAssertion: tok}
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
	denied := &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode(status)}}
	decisionID := ""
	if d != nil {
		decisionID = d.ID
	}
	body := ""
	if d != nil && d.Body != "" {
		body = d.Body
	} else {
		msg := map[string]string{"error": strings.ToLower(http.StatusText(status))}
		if decisionID != "" {
			msg["decision_id"] = decisionID
		}
		b, _ := json.Marshal(msg)
		body = string(b)
		denied.Headers = append(denied.Headers, overwrite("content-type", "application/json"))
	}
	denied.Body = body
	if status == http.StatusUnauthorized {
		challenge := `Bearer`
		if out.invalidToken {
			challenge = `Bearer error="invalid_token"`
		}
		denied.Headers = append(denied.Headers, overwrite("www-authenticate", challenge))
	}
	if d != nil {
		for _, h := range d.Headers {
			denied.Headers = append(denied.Headers, overwrite(strings.ToLower(h.Name), h.Value))
		}
	}
	grpcCode := code.Code_PERMISSION_DENIED
	if status == http.StatusUnauthorized {
		grpcCode = code.Code_UNAUTHENTICATED
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(grpcCode)},
		HttpResponse:    &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
		DynamicMetadata: metadata(d),
	}
}

// metadata is the dynamic metadata Envoy attaches to the request (and can
// log): the policy's own, plus the decision id.
func metadata(d *policy.Decision) *structpb.Struct {
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
		// The policy returned something structpb cannot hold; keep ours.
		st, _ = structpb.NewStruct(map[string]any{"decision_id": d.ID})
	}
	return st
}

func overwrite(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: cleanHeaderValue(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// cleanHeaderValue drops bytes Envoy rejects in header values (CR, LF, NUL
// and other controls): a claim must not be able to inject a header.
func cleanHeaderValue(v string) string {
	if len(v) > maxHeaderValue {
		v = v[:maxHeaderValue]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, v)
}

func policySets(d *policy.Decision, name string) bool {
	for _, h := range d.Headers {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	return false
}
