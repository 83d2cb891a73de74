// Package certs is Gatehouse's certificate authority and certificate store.
//
// It creates and loads a local CA whose certificates carry SPIFFE identities
// (spiffe://<trust-domain>/<role>/<name>), issues short-lived leaf
// certificates from it, keeps one current leaf per identity and re-issues it
// at two thirds of its life (Rotator), rotates the CA itself while the old CA
// stays trusted for an overlap window (TrustBundle), validates
// operator-provided certificate/key pairs from a directory (DirSource), and
// summarises PEM files for humans (Inspect).
//
// On-disk layout of a CA directory (mode 0700):
//
//	ca.crt                      current CA certificate, PEM (0644)
//	ca.key                      current CA private key, PKCS#8 PEM (0600)
//	previous/<serial>.crt       a rotated-out CA, still trusted until ...
//	previous/<serial>.retire    ... the RFC 3339 time in this file
//
// The package depends on the standard library only, so the control plane,
// the authorizer and the command line can all share it.
package certs
