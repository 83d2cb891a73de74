// Package assertion carries the end user's identity across service hops
// without trusting plain headers: the edge's ext_authz signs what it decided
// into a short-lived compact JWS (the Gatehouse assertion) and every later
// hop's ext_authz verifies it.
//
//	keys.go    ES256 signing keys: generated, rotated with overlap, stored
//	           0600 in the state directory, published as a JWKS
//	mint.go    identity + destination service → signed assertion (edge)
//	verify.go  assertion + presenting mTLS peer + destination → the user
//	           (sidecar), through extauthz/jwt's strict verifier
//
// An assertion names exactly one audience, the SPIFFE id of the service it
// was minted for (spiffe://<td>/sidecar/<service>). It is accepted at that
// service when presented by an edge proxy, or at a service T when presented
// by the audience service S itself and a chain rule S → T allows it. It is
// not single-use (one user request may fan out to many calls); replay is
// bounded by that audience-and-peer binding and by exp (at most 60 s).
package assertion
