package assertion

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// Token lifetime bounds and the JOSE typ of an assertion.
const (
	MaxTTL     = 60 * time.Second
	DefaultTTL = 30 * time.Second
	TokenType  = "gatehouse-assertion+jwt"
)

// Claim names beyond the registered ones. The identity's own issuer (the
// IdP) travels as identity_issuer: iss is always Gatehouse.
const (
	claimKind           = "kind"
	claimVerifiedBy     = "verified_by"
	claimIdentityIssuer = "identity_issuer"
	claimEmail          = "email"
	claimRoles          = "roles"
	claimGroups         = "groups"
	claimSPIFFEID       = "spiffe_id"
	claimDecisionID     = "decision_id"
	claimPolicyRevision = "policy_revision"
)

// ServiceID is the SPIFFE id of a service's sidecar, the audience of an
// assertion minted for that service.
func ServiceID(trustDomain, service string) string {
	return "spiffe://" + trustDomain + "/sidecar/" + service
}

// edgePrefix is what every edge proxy's SPIFFE id starts with.
func edgePrefix(trustDomain string) string { return "spiffe://" + trustDomain + "/edge/" }

// ErrIdentityExpired: the identity to assert has no lifetime left.
var ErrIdentityExpired = errors.New("assertion: the identity has expired")

// Minter signs assertions with the current key of a KeySet.
type Minter struct {
	keys        *KeySet
	issuer      string
	trustDomain string
	ttl         time.Duration
	now         func() time.Time
}

// MintOption configures NewMinter.
type MintOption func(*Minter)

// WithTTL sets the assertion lifetime (default DefaultTTL, at most MaxTTL).
func WithTTL(d time.Duration) MintOption { return func(m *Minter) { m.ttl = d } }

// WithMintClock sets the time source (default time.Now).
func WithMintClock(now func() time.Time) MintOption { return func(m *Minter) { m.now = now } }

// NewMinter returns a Minter issuing as issuer for services of trustDomain.
func NewMinter(keys *KeySet, issuer, trustDomain string, opts ...MintOption) (*Minter, error) {
	m := &Minter{keys: keys, issuer: issuer, trustDomain: trustDomain, ttl: DefaultTTL, now: time.Now}
	for _, o := range opts {
		o(m)
	}
	switch {
	case keys == nil:
		return nil, errors.New("assertion: minter needs a key set")
	case issuer == "":
		return nil, errors.New("assertion: issuer is required")
	case trustDomain == "" || strings.ContainsAny(trustDomain, "/:"):
		return nil, fmt.Errorf("assertion: invalid trust domain %q", trustDomain)
	case m.ttl <= time.Second || m.ttl > MaxTTL:
		return nil, fmt.Errorf("assertion: ttl %s must be above 1s and at most %s", m.ttl, MaxTTL)
	}
	return m, nil
}

// Statement is what the edge decided: who, for which service, by which
// decision.
type Statement struct {
	Identity       *identity.Identity
	Service        string // destination service name (route context extension "service")
	DecisionID     string
	PolicyRevision string
}

// Mint signs st. The assertion never outlives the identity it carries.
func (m *Minter) Mint(st Statement) (string, error) {
	id := st.Identity
	switch {
	case id == nil || id.Subject == "":
		return "", errors.New("assertion: nothing to assert: no identity subject")
	case st.Service == "":
		return "", errors.New("assertion: no destination service")
	}
	now := m.now()
	exp := now.Add(m.ttl)
	if !id.Expiry.IsZero() && id.Expiry.Before(exp) {
		exp = id.Expiry
	}
	if exp.Unix() <= now.Unix() {
		return "", ErrIdentityExpired
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("assertion: jti: %w", err)
	}
	claims := map[string]any{
		"iss": m.issuer, "sub": id.Subject, "aud": ServiceID(m.trustDomain, st.Service),
		"iat": now.Unix(), "exp": exp.Unix(), "jti": base64.RawURLEncoding.EncodeToString(jti),
		claimKind: string(id.Kind), claimVerifiedBy: string(id.Method),
		claimDecisionID: st.DecisionID, claimPolicyRevision: st.PolicyRevision,
	}
	for k, v := range map[string]string{claimIdentityIssuer: id.Issuer, claimEmail: id.Email, claimSPIFFEID: id.SPIFFEID} {
		if v != "" {
			claims[k] = v
		}
	}
	if len(id.Roles) > 0 {
		claims[claimRoles] = id.Roles
	}
	if len(id.Groups) > 0 {
		claims[claimGroups] = id.Groups
	}
	kid, priv, err := m.keys.signer()
	if err != nil {
		return "", err
	}
	return sign(priv, kid, claims)
}

// sign produces a compact ES256 JWS (RFC 7515, RFC 7518 §3.4: r||s, 32
// bytes each).
func sign(priv *ecdsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	h, err := json.Marshal(map[string]string{"alg": "ES256", "kid": kid, "typ": TokenType})
	if err != nil {
		return "", fmt.Errorf("assertion: header: %w", err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("assertion: claims: %w", err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	input := enc(h) + "." + enc(c)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
	if err != nil {
		return "", fmt.Errorf("assertion: sign: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc(sig), nil
}
