package assertion

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
)

// DefaultClockSkew is the skew tolerated on an assertion's exp and iat.
// Small: the lifetime itself is at most a minute.
const DefaultClockSkew = 5 * time.Second

// Reason says why an assertion was refused. jwt rejections keep the jwt
// package's reason (expired, unknown_kid, bad_signature, ...); the ones
// below are this package's own.
type Reason string

// Reasons of this package. The first three are misuse of a valid
// assertion (Error.Misuse).
const (
	ReasonWrongAudience Reason = "wrong_audience" // not minted for this service, and no chain rule allows it
	ReasonWrongPeer     Reason = "wrong_peer"     // presented by a peer other than the one it is bound to
	ReasonNoPeer        Reason = "no_peer"        // no SPIFFE peer certificate: nobody to bind it to
	ReasonInvalidClaim  Reason = "invalid_claim"  // a Gatehouse claim is missing or malformed
	ReasonNoDestination Reason = "no_destination" // the route names no service (context extension "service")
)

// Error is a refused assertion. It never contains the token.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string {
	msg := "assertion rejected: " + string(e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Misuse reports a verified assertion presented where it does not belong
// (403), as opposed to one that failed verification (401).
func (e *Error) Misuse() bool {
	switch e.Reason {
	case ReasonWrongAudience, ReasonWrongPeer, ReasonNoPeer, ReasonNoDestination:
		return true
	}
	return false
}

// ReasonOf returns the Reason of err, or "".
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func refuse(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// Chain lets an assertion minted for From be presented by From's own peer
// identity when it calls To ("orders → inventory").
type Chain struct{ From, To string }

// VerifierConfig describes Gatehouse as an issuer of assertions.
type VerifierConfig struct {
	Issuer      string
	JWKSURI     string // https, or http to a loopback host (the admin listener)
	TrustDomain string
	// Services are the mesh's service names: their SPIFFE ids are the only
	// audiences accepted at all.
	Services  []string
	Chains    []Chain
	ClockSkew time.Duration // default DefaultClockSkew
}

// Verifier checks assertions through extauthz/jwt's Verifier, configured
// with Gatehouse as one more JWKS issuer (strict compact JWS, ES256 only,
// exp required), then binds them to the hop presenting them.
type Verifier struct {
	jv          *jwt.Verifier
	trustDomain string
	edgePrefix  string
	chains      map[string]map[string]bool // audience SPIFFE id → destination services
}

// NewVerifier prepares a Verifier; opts go to jwt.NewVerifier. Close it
// when done.
func NewVerifier(ctx context.Context, cfg VerifierConfig, opts ...jwt.Option) (*Verifier, error) {
	if cfg.TrustDomain == "" || strings.ContainsAny(cfg.TrustDomain, "/:") {
		return nil, fmt.Errorf("assertion: invalid trust domain %q", cfg.TrustDomain)
	}
	if len(cfg.Services) == 0 {
		return nil, errors.New("assertion: no services: the audiences are their SPIFFE ids")
	}
	skew := cfg.ClockSkew
	if skew == 0 {
		skew = DefaultClockSkew
	}
	v := &Verifier{trustDomain: cfg.TrustDomain, edgePrefix: edgePrefix(cfg.TrustDomain), chains: map[string]map[string]bool{}}
	auds := make([]string, 0, len(cfg.Services))
	for _, s := range cfg.Services {
		auds = append(auds, ServiceID(cfg.TrustDomain, s))
	}
	for _, c := range cfg.Chains {
		if c.From == "" || c.To == "" || c.From == c.To {
			return nil, fmt.Errorf("assertion: invalid chain %q → %q", c.From, c.To)
		}
		from := ServiceID(cfg.TrustDomain, c.From)
		if v.chains[from] == nil {
			v.chains[from] = map[string]bool{}
		}
		v.chains[from][c.To] = true
	}
	jv, err := jwt.NewVerifier(ctx, []jwt.IssuerConfig{{
		Issuer:     cfg.Issuer,
		Audiences:  auds,
		Kind:       identity.KindUser, // replaced by the kind claim
		Type:       TokenType,
		Algorithms: []string{"ES256"},
		JWKSURI:    cfg.JWKSURI,
		ClockSkew:  skew,
	}}, opts...)
	if err != nil {
		return nil, fmt.Errorf("assertion: %w", err)
	}
	v.jv = jv
	return v, nil
}

// Close stops background JWKS refreshes.
func (v *Verifier) Close() error { return v.jv.Close() }

// Refresh fetches the JWKS now (after an in-process rotation).
func (v *Verifier) Refresh(ctx context.Context) error { return v.jv.Refresh(ctx) }

// Hop is where an assertion is presented: the destination service (route
// context extension "service") and the SPIFFE id of the mTLS peer.
type Hop struct {
	Service string
	Peer    string
}

// Assertion is a verified assertion: the identity it carries (what policy
// sees as input.on_behalf_of) and its own facts.
type Assertion struct {
	Identity       identity.Identity
	ID             string // jti
	Issuer         string // Gatehouse
	Audience       string
	DecisionID     string
	PolicyRevision string
	IssuedAt       time.Time
	Expiry         time.Time
	// Token is the compact JWS, to pass on to the upstream; never log it.
	Token string
}

// Verify checks token as presented at hop: signature by a published key,
// iss, exp (≤ 60 s after iat), and that it was minted for hop.Service and
// presented by an edge, or minted for a service S, presented by S itself
// and allowed by a chain rule S → hop.Service.
func (v *Verifier) Verify(ctx context.Context, token string, hop Hop) (*Assertion, error) {
	res, err := v.jv.Verify(ctx, token)
	if err != nil {
		r := Reason(jwt.ReasonOf(err))
		if r == "" {
			r = ReasonInvalidClaim
		}
		return nil, &Error{Reason: r, Err: err}
	}
	if len(res.Audience) != 1 {
		return nil, refuse(ReasonInvalidClaim, "aud must name exactly one service")
	}
	aud := res.Audience[0]
	a, err := v.build(res, token, aud)
	if err != nil {
		return nil, err
	}
	// The assertion is valid; what follows decides whether this hop may
	// use it (misuse: 403, where a bad assertion above is 401).
	if hop.Service == "" {
		return nil, refuse(ReasonNoDestination, "the route names no destination service")
	}
	if hop.Peer == "" {
		return nil, refuse(ReasonNoPeer, "an assertion must come with the presenting service's SPIFFE certificate")
	}
	// Peers are compared as strings below: only a well-formed workload id
	// of this trust domain may match ("edge/../x" must not pass as an edge).
	if err := certs.ValidateWorkloadID(hop.Peer, v.trustDomain); err != nil {
		return nil, refuse(ReasonWrongPeer, "presented by %q: %v", hop.Peer, err)
	}
	dest := ServiceID(v.trustDomain, hop.Service)
	switch {
	case aud == dest:
		// Minted for this service: it arrives straight from an edge.
		if !strings.HasPrefix(hop.Peer, v.edgePrefix) || len(hop.Peer) == len(v.edgePrefix) {
			return nil, refuse(ReasonWrongPeer, "minted for %s, presented by %s, not an edge", aud, hop.Peer)
		}
	case v.chains[aud][hop.Service]:
		// Minted for the caller, passed on along a configured chain.
		if hop.Peer != aud {
			return nil, refuse(ReasonWrongPeer, "minted for %s, presented by %s at %s", aud, hop.Peer, dest)
		}
	default:
		return nil, refuse(ReasonWrongAudience, "minted for %s, presented at %s, and no chain rule allows it", aud, dest)
	}
	return a, nil
}

func (v *Verifier) build(res *jwt.Result, token, aud string) (*Assertion, error) {
	str := func(name string) string { s, _ := res.Claims[name].(string); return s }
	a := &Assertion{
		ID: str("jti"), Issuer: res.Issuer, Audience: aud, DecisionID: str(claimDecisionID),
		PolicyRevision: str(claimPolicyRevision), IssuedAt: res.IssuedAt, Expiry: res.Expiry, Token: token,
	}
	kind := identity.Kind(str(claimKind))
	switch {
	case a.ID == "":
		return nil, refuse(ReasonInvalidClaim, "jti is missing")
	case res.IssuedAt.IsZero():
		return nil, refuse(ReasonInvalidClaim, "iat is missing")
	case res.Expiry.Sub(res.IssuedAt) > MaxTTL:
		return nil, refuse(ReasonInvalidClaim, "lifetime exceeds %s", MaxTTL)
	case !slices.Contains([]identity.Kind{identity.KindUser, identity.KindService, identity.KindPeer}, kind):
		return nil, refuse(ReasonInvalidClaim, "kind is missing or unknown")
	}
	a.Identity = identity.Identity{
		Kind: kind, Subject: res.Subject, Issuer: str(claimIdentityIssuer), Method: identity.Method(str(claimVerifiedBy)),
		Email: res.Email, Roles: res.Roles, Groups: res.Groups, SPIFFEID: str(claimSPIFFEID), Expiry: res.Expiry,
	}
	return a, nil
}

// PolicyValue is input.on_behalf_of: the carried identity in the same shape
// as input.identity, plus the assertion's own facts under "assertion".
func (a *Assertion) PolicyValue() map[string]any {
	id := a.Identity
	m := map[string]any{"kind": string(id.Kind), "subject": id.Subject, "verified_by": string(id.Method)}
	for k, v := range map[string]string{"issuer": id.Issuer, "email": id.Email, "spiffe_id": id.SPIFFEID} {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range map[string][]string{"roles": id.Roles, "groups": id.Groups} {
		if len(v) > 0 {
			l := make([]any, len(v))
			for i, s := range v {
				l[i] = s
			}
			m[k] = l
		}
	}
	m["assertion"] = map[string]any{
		"id": a.ID, "issuer": a.Issuer, "audience": a.Audience, "decision_id": a.DecisionID,
		"policy_revision": a.PolicyRevision, "expires_at": a.Expiry.UTC().Format(time.RFC3339),
	}
	return m
}
