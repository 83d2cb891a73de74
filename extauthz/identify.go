package extauthz

import (
	"context"
	"errors"
	"fmt"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
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
	peer, err := identity.ParsePeer(src.GetCertificate(), src.GetPrincipal())
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
	scheme, rest, found := strings.Cut(v, " ")
	if !found || !strings.EqualFold(scheme, "bearer") {
		return "", false, nil
	}
	// Envoy joins repeated headers with ","; two tokens are ambiguous.
	if rest == "" || strings.ContainsAny(rest, " ,\t") {
		return "", true, errors.New("malformed Authorization header")
	}
	return rest, true, nil
}
