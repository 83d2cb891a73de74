// Package identity defines who a request comes from, as established by
// ext_authz before policy is asked: a user (OIDC session or bearer JWT), a
// service (workload JWT or SPIFFE peer certificate) or a bare mTLS peer.
package identity

import "time"

// Kind says what sort of principal an Identity describes.
type Kind string

const (
	// KindUser is a human, via an OIDC session or a user bearer token.
	KindUser Kind = "user"
	// KindService is a workload, via a service token or a SPIFFE peer certificate.
	KindService Kind = "service"
	// KindPeer is an mTLS peer whose certificate carries no SPIFFE id.
	KindPeer Kind = "peer"
)

// Method says how an identity was verified; it reaches policy so rules can
// demand a particular strength (e.g. "mtls" for service-to-service calls).
type Method string

const (
	MethodJWKS    Method = "jwks"    // bearer JWT, key from the issuer's JWKS
	MethodX5T     Method = "x5t"     // bearer JWT, key from the local trust store by thumbprint
	MethodX5C     Method = "x5c"     // bearer JWT, key from an embedded chain rooted in a trusted CA
	MethodMTLS    Method = "mtls"    // peer certificate presented to Envoy
	MethodSession Method = "session" // OIDC browser session cookie
)

// Identity is the verified principal of one request. Its JSON form is what
// policies see as input.identity.
type Identity struct {
	Kind     Kind           `json:"kind"`
	Subject  string         `json:"subject"`
	Issuer   string         `json:"issuer,omitempty"`
	Method   Method         `json:"verified_by"`
	Email    string         `json:"email,omitempty"`
	Roles    []string       `json:"roles,omitempty"`
	Groups   []string       `json:"groups,omitempty"`
	SPIFFEID string         `json:"spiffe_id,omitempty"`
	Expiry   time.Time      `json:"-"`
	Claims   map[string]any `json:"claims,omitempty"`
	Peer     *Peer          `json:"peer,omitempty"`
}

// Peer describes the mTLS client certificate Envoy forwarded, if any.
type Peer struct {
	Principal         string    `json:"principal,omitempty"` // source.principal as Envoy reports it
	SPIFFEID          string    `json:"spiffe_id,omitempty"`
	Subject           string    `json:"subject,omitempty"`
	Issuer            string    `json:"issuer,omitempty"`
	URISANs           []string  `json:"uri_sans,omitempty"`
	DNSSANs           []string  `json:"dns_sans,omitempty"`
	SHA256Fingerprint string    `json:"sha256_fingerprint,omitempty"` // lowercase hex of the DER
	Serial            string    `json:"serial,omitempty"`
	NotAfter          time.Time `json:"not_after,omitzero"`
}

// VerifiedEmail returns email unless the token's email_verified claim says
// the provider did not verify it (false, or the string "false" some
// providers send). An unverified address is whatever the user typed at
// sign-up, and a policy matching on it (a company domain, say) would trust
// it; the claim itself stays in the claims for a policy that wants it.
// An absent claim keeps the address: many providers omit it.
func VerifiedEmail(email string, emailVerified any) string {
	switch v := emailVerified.(type) {
	case bool:
		if !v {
			return ""
		}
	case string:
		if v != "true" {
			return ""
		}
	case nil:
	default:
		return "" // a malformed claim does not vouch for anything
	}
	return email
}
