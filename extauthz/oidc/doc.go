// Package oidc logs browsers in for the ext_authz server, so the edge Envoy
// needs no oauth2 filter. It speaks OpenID Connect's authorization code flow
// with PKCE (S256), state and nonce, keeps the session in an encrypted
// cookie, refreshes tokens before they expire, and logs out (locally,
// RP-initiated at the IdP when it advertises an end_session_endpoint, and by
// OIDC Back-Channel Logout 1.0).
//
// The package knows nothing about Envoy: a Request is what Check saw (host,
// path, headers), a Response is what Check should answer instead of asking
// policy. The extauthz package wires it into Check:
//
//	Intercept    the callback, logout and (optionally) back-channel paths
//	             are answered here, before identity and policy;
//	Authenticate a valid session cookie becomes an identity (kind user,
//	             verified_by "session"), refreshing tokens when due;
//	Challenge    when policy denies an anonymous request, a browser (GET or
//	             HEAD, Accept: text/html, no Authorization header) on a host
//	             and path a provider covers is redirected to the IdP; any
//	             other client keeps its 401.
//
// A route is therefore "protected" exactly when policy denies it to an
// anonymous caller: policy stays the single place that says what needs a
// login.
//
// Security properties, each tested against a real Dex:
//   - redirect_uri is the provider's configured external URL plus the
//     callback path, never derived from request headers; a request on a
//     host no provider names never starts a login;
//   - state is bound to the browser by a short-lived, sealed, HttpOnly
//     login cookie and is accepted once; the ID token's signature, iss,
//     aud, exp, iat, nonce and azp are checked;
//   - the return URL is the original request's path, kept only when it is
//     a same-origin relative path ("/" otherwise);
//   - cookies are sealed with XChaCha20-Poly1305 under a list of keys (the
//     first seals, all open) and carry the __Host- prefix, Secure, HttpOnly,
//     SameSite=Lax and Path=/; tokens inside are never readable by the
//     browser, and a session larger than one cookie is split into a bounded
//     number of chunks;
//   - logout and back-channel logout revoke sessions in a RevocationStore,
//     so a copied cookie stops working too;
//   - every failure ends in "no session": the request is denied or sent to
//     log in again, never allowed on stale credentials past their expiry.
package oidc
