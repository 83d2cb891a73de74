package extauthz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-proxy/gatehouse/extauthz/assertion"
	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// TokenVerifier establishes identity from a bearer token. Errors mean the
// token is not acceptable; their text must never contain the token.
type TokenVerifier interface {
	VerifyToken(ctx context.Context, token string) (*identity.Identity, error)
}

// errInvalidCredentials marks a request that presented credentials which did
// not verify: it is answered 401 without asking policy. errInvalidToken is
// the bearer-token case, answered with error="invalid_token" (RFC 6750).
var (
	errInvalidCredentials = errors.New("invalid credentials")
	errInvalidToken       = fmt.Errorf("%w: invalid bearer token", errInvalidCredentials)
)

// identify establishes who sent req. It returns (nil, nil) for an anonymous
// request (policy may still allow public paths) and an error wrapping
// errInvalidCredentials when credentials were presented but rejected.
// Without a bearer token a valid browser session (ls) comes before the bare
// mTLS peer; an invalid session is anonymous, so the browser can log in again.
func (s *Server) identify(ctx context.Context, req *authv3.CheckRequest, ls *loginState) (*identity.Identity, error) {
	attrs := req.GetAttributes()
	src := attrs.GetSource()
	peer, err := s.peers.Parse(src.GetCertificate(), src.GetPrincipal())
	if err != nil {
		// Envoy validated this certificate; if we cannot read it, something
		// between us is wrong, and guessing would fail open.
		return nil, fmt.Errorf("%w: %w", errInvalidCredentials, err)
	}

	token, present, err := bearerToken(attrs.GetRequest().GetHttp().GetHeaders())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidToken, err)
	}
	if present {
		if s.tokens == nil {
			return nil, fmt.Errorf("%w: no token issuers are configured", errInvalidToken)
		}
		id, err := s.tokens.VerifyToken(ctx, token)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidToken, err)
		}
		id.Peer = peer
		return id, nil
	}
	if id := s.sessionIdentity(ctx, ls); id != nil {
		id.Peer = peer
		return id, nil
	}
	if peer == nil {
		return nil, nil
	}
	id := &identity.Identity{Method: identity.MethodMTLS, Peer: peer, Expiry: peer.NotAfter}
	if peer.SPIFFEID != "" {
		id.Kind, id.Subject, id.SPIFFEID = identity.KindService, peer.SPIFFEID, peer.SPIFFEID
	} else {
		id.Kind, id.Subject = identity.KindPeer, peer.Subject
	}
	id.Issuer = peer.Issuer
	return id, nil
}

// bearerToken extracts an RFC 6750 bearer token from the request headers
// (Envoy sends header names in lower case). Any other scheme counts as no
// token: a Basic header is the upstream's business, not ours.
func bearerToken(headers map[string]string) (token string, present bool, err error) {
	v, ok := headers["authorization"]
	if !ok {
		return "", false, nil
	}
	const scheme = "bearer"
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false, nil // another scheme, or "Bearer" alone: no token
	}
	rest := v[len(scheme):]
	switch rest[0] {
	case ' ':
		rest = rest[1:]
	case '\t':
		// "Bearer<TAB>token" is no valid header, but it carries a token a
		// lenient upstream might take as verified here: refuse it rather
		// than pass it on as an anonymous request's header.
		return "", true, errors.New("malformed Authorization header")
	default:
		return "", false, nil // "Bearerx…": another scheme
	}
	// Envoy joins repeated headers with ","; two tokens are ambiguous.
	// (Three vectorised byte searches: ContainsAny walks a token byte by byte.)
	if rest == "" || strings.IndexByte(rest, ' ') >= 0 || strings.IndexByte(rest, ',') >= 0 || strings.IndexByte(rest, '\t') >= 0 {
		return "", true, errors.New("malformed Authorization header")
	}
	return rest, true, nil
}

// Keys and values of the route context extensions xds/translate sets
// (translate.ContextRole, translate.ContextService).
const (
	ctxRole      = "role"
	ctxService   = "service"
	roleSidecar  = "sidecar"
	hdrAssertion = "assertion"
)

// hop is where a request stands in the mesh, from its route's context
// extensions. Only an explicit role=sidecar makes a sidecar hop: a route
// without a role is treated as an edge, where assertions are never accepted.
type hop struct {
	sidecar bool
	service string // destination service; "" when the route names none
}

func hopOf(req *authv3.CheckRequest) hop {
	ext := req.GetAttributes().GetContextExtensions()
	return hop{sidecar: ext[ctxRole] == roleSidecar, service: ext[ctxService]}
}

// onBehalfOf verifies the propagated assertion of a sidecar hop. It returns
// (nil, nil) when there is none, or on an edge hop, where a client-sent one
// is ignored (and removed by allow). A presented assertion that fails is an
// error, never "no user": the caller must not lose the user's identity
// silently, nor gain another's.
func (s *Server) onBehalfOf(ctx context.Context, req *authv3.CheckRequest, h hop, id *identity.Identity) (*assertion.Assertion, error) {
	if !h.sidecar {
		return nil, nil
	}
	token, present := req.GetAttributes().GetRequest().GetHttp().GetHeaders()[s.headers.Prefix+hdrAssertion]
	if !present {
		return nil, nil
	}
	if s.asserts == nil {
		return nil, &assertion.Error{Reason: assertion.ReasonInvalidClaim, Err: errors.New("an assertion was presented but assertion verification is not configured")}
	}
	peer := ""
	if id != nil && id.Peer != nil {
		peer = id.Peer.SPIFFEID
	}
	return s.asserts.Verify(ctx, token, assertion.Hop{Service: h.service, Peer: peer})
}

// assertionRefused is the outcome of a refused assertion: 403 when a valid
// one is presented where it does not belong (wrong audience or peer), 401
// when it does not verify (expired, unknown key, tampered).
func assertionRefused(err error) outcome {
	var ae *assertion.Error
	if errors.As(err, &ae) && ae.Misuse() {
		return outcome{status: 403, reason: "forbidden: " + err.Error()}
	}
	return outcome{status: 401, reason: "unauthenticated: " + err.Error()}
}

// evaluate asks policy about req, with input.on_behalf_of when obo is set.
func (s *Server) evaluate(ctx context.Context, req *authv3.CheckRequest, id *identity.Identity, obo *assertion.Assertion) (*policy.Decision, error) {
	opts := s.inputOpts
	if obo != nil {
		opts = append(slices.Clip(opts), policy.WithOnBehalfOf(obo.PolicyValue()))
	}
	return s.policy.EvaluateRequest(ctx, req, id, opts...)
}
