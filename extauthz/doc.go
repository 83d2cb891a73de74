// Package extauthz is Gatehouse's Envoy external-authorization server
// (envoy.service.auth.v3.Authorization). One Check call walks one path,
// file by file:
//
//	server.go    Check: bound the call, then the steps below
//	identify.go  identity: bearer JWT, mTLS peer certificate
//	             (extauthz/jwt, extauthz/identity); on sidecar routes the
//	             propagated Gatehouse assertion (extauthz/assertion) →
//	             input.on_behalf_of, refused outright when invalid;
//	             policy input and decision (extauthz/policy)
//	session.go   browser login (extauthz/oidc): callback, logout, session cookie
//	respond.go   decision → CheckResponse: identity headers on allow
//	             (on edge routes plus a freshly signed assertion for the
//	             routed service), 401/403 with a small JSON body on deny
//	decisionlog.go one line per decision, never a token or cookie
//
// The server fails closed: any error, timeout or missing policy denies.
package extauthz
