package extauthz

import (
	"context"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// BrowserLogin logs browsers in (OIDC); *oidc.Flow implements it. Check
// uses it at three points:
//
//  1. Intercept: the callback and logout paths are answered by the flow,
//     before identity and policy;
//  2. Authenticate: with no bearer token, a valid session cookie is the
//     identity (kind user, verified_by "session");
//  3. Challenge: when policy denies an anonymous request (the 401 case),
//     a browser is redirected to the IdP instead. A route needs a login
//     exactly when policy denies it to nobody in particular.
//
// Set-Cookie values (a refreshed or cleared session) ride on whatever the
// answer is: response_headers_to_add on allow, the denied response's
// headers otherwise. Gatehouse's cookies are removed from the request
// before it goes upstream.
type BrowserLogin interface {
	Intercept(ctx context.Context, r *oidc.Request) (*oidc.Response, bool)
	Authenticate(ctx context.Context, r *oidc.Request) oidc.Result
	Challenge(ctx context.Context, r *oidc.Request) (*oidc.Response, bool)
	UpstreamCookie(header string) (string, bool)
}

// WithBrowserLogin turns on browser login through l.
func WithBrowserLogin(l BrowserLogin) Option { return func(s *Server) { s.login = l } }

// loginState carries the flow's view of one Check; nil without a flow.
type loginState struct {
	req        *oidc.Request
	setCookies []string
}

func (s *Server) newLoginState(req *authv3.CheckRequest) *loginState {
	if s.login == nil {
		return nil
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	body := h.GetRawBody()
	if len(body) == 0 && h.GetBody() != "" {
		body = []byte(h.GetBody())
	}
	return &loginState{req: &oidc.Request{
		Method: h.GetMethod(), Host: h.GetHost(), Path: h.GetPath(), Header: h.GetHeaders(), Body: body,
	}}
}

// interceptLogin answers the flow's own paths; nil for any other request.
func (s *Server) interceptLogin(ctx context.Context, req *authv3.CheckRequest, ls *loginState, start time.Time) *authv3.CheckResponse {
	if ls == nil {
		return nil
	}
	r, ok := s.login.Intercept(ctx, ls.req)
	if !ok {
		return nil
	}
	return s.finishLogin(ctx, req, nil, nil, r, "login flow endpoint", start)
}

// sessionIdentity is the identity of the request's session cookie, if any.
func (s *Server) sessionIdentity(ctx context.Context, ls *loginState) *identity.Identity {
	if ls == nil {
		return nil
	}
	res := s.login.Authenticate(ctx, ls.req)
	ls.setCookies = append(ls.setCookies, res.SetCookie...)
	return res.Identity
}

// challengeLogin turns the 401 of an anonymous browser request into a
// redirect to the IdP; nil when the flow does not take it.
func (s *Server) challengeLogin(ctx context.Context, req *authv3.CheckRequest, ls *loginState, id *identity.Identity, d *policy.Decision, out outcome, start time.Time) *authv3.CheckResponse {
	if ls == nil || out.allowed || id != nil || out.status != 401 {
		return nil
	}
	r, ok := s.login.Challenge(ctx, ls.req)
	if !ok {
		return nil
	}
	resp := s.finishLogin(ctx, req, id, d, r, out.reason+"; login required", start)
	s.addLoginHeaders(req, ls, resp) // e.g. the expiry of a session that no longer opens
	return resp
}

// finishLogin sends the flow's answer as a denied response (a non-OK gRPC
// status, so Envoy never lets the request through), logged and counted like
// any decision.
func (s *Server) finishLogin(ctx context.Context, req *authv3.CheckRequest, id *identity.Identity, d *policy.Decision, r *oidc.Response, reason string, start time.Time) *authv3.CheckResponse {
	denied := &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode(r.Status)}, Body: r.Body}
	for _, k := range sortedKeys(r.Header) {
		name := strings.ToLower(k)
		for _, v := range r.Header[k] {
			if name == "set-cookie" {
				denied.Headers = append(denied.Headers, appendHeader(name, v))
			} else {
				denied.Headers = append(denied.Headers, overwrite(name, v))
			}
		}
	}
	resp := &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code.Code_UNAUTHENTICATED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
	}
	if d != nil {
		resp.DynamicMetadata = metadata(d)
	}
	out := outcome{status: r.Status, reason: reason}
	elapsed := s.now().Sub(start)
	s.logDecision(ctx, req, id, d, out, elapsed)
	s.metrics.observe(out, elapsed)
	return resp
}

// addLoginHeaders puts the flow's Set-Cookie values on resp and, on allow,
// keeps Gatehouse's cookies from the upstream.
func (s *Server) addLoginHeaders(req *authv3.CheckRequest, ls *loginState, resp *authv3.CheckResponse) {
	if ls == nil {
		return
	}
	switch r := resp.GetHttpResponse().(type) {
	case *authv3.CheckResponse_OkResponse:
		ok := r.OkResponse
		for _, c := range ls.setCookies {
			ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, appendHeader("set-cookie", c))
		}
		if cookie, changed := s.login.UpstreamCookie(req.GetAttributes().GetRequest().GetHttp().GetHeaders()["cookie"]); changed {
			if cookie == "" {
				ok.HeadersToRemove = append(ok.HeadersToRemove, "cookie")
			} else {
				ok.Headers = append(ok.Headers, overwrite("cookie", cookie))
			}
		}
	case *authv3.CheckResponse_DeniedResponse:
		for _, c := range ls.setCookies {
			r.DeniedResponse.Headers = append(r.DeniedResponse.Headers, appendHeader("set-cookie", c))
		}
	}
}

// appendHeader adds a header without replacing one of the same name:
// several Set-Cookie headers must all reach the browser.
func appendHeader(k, v string) *corev3.HeaderValueOption {
	return newHeaderOption(k, v, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
}
