package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

func mustECKey(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	must(t, err)
	return k
}

const x5cIssuer = "https://devices.example"

func TestX5C(t *testing.T) {
	clock := newTestClock()
	now := clock.Now()
	root := issueCert(t, nil, certOpts{cn: "root", isCA: true})
	inter := issueCert(t, root, certOpts{cn: "intermediate", isCA: true})
	leaf := issueCert(t, inter, certOpts{cn: "device-1"})
	directLeaf := issueCert(t, root, certOpts{cn: "device-2", key: testRSAKeys()[1]})
	otherRoot := issueCert(t, nil, certOpts{cn: "other-root", isCA: true})
	otherLeaf := issueCert(t, otherRoot, certOpts{cn: "device-x"})
	selfSigned := issueCert(t, nil, certOpts{cn: "self"})
	expiredLeaf := issueCert(t, root, certOpts{cn: "expired", notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour)})
	youngLeaf := issueCert(t, root, certOpts{cn: "young", notBefore: now.Add(-10 * time.Minute)})
	caLeaf := issueCert(t, root, certOpts{cn: "ca-as-leaf", isCA: true})
	noDigSig := issueCert(t, root, certOpts{cn: "no-digsig", keyUsage: x509.KeyUsageKeyEncipherment})

	v := newTestVerifier(t, clock, []IssuerConfig{
		{Issuer: x5cIssuer, Audiences: []string{"api"}, TrustedCAs: []*x509.Certificate{root.cert}, Algorithms: []string{"ES256", "RS256"}},
		{Issuer: "https://no-x5c.example", Audiences: []string{"api"}, X5T: true, TrustStore: emptyTrustStore(t)},
	}, WithCache(0, 0))
	claims := claimsFor(x5cIssuer, now)
	withIat := func(iat time.Time) map[string]any {
		c := claimsFor(x5cIssuer, now)
		c["iat"] = iat.Unix()
		return c
	}

	tests := []struct {
		name string
		tok  string
		want Reason
	}{
		{"leaf+intermediate to root", certToken(t, leaf, claims, map[string]any{"x5c": x5cChain(leaf, inter)}), ""},
		{"leaf+intermediate+root", certToken(t, leaf, claims, map[string]any{"x5c": x5cChain(leaf, inter, root)}), ""},
		{"RSA leaf directly under root", certToken(t, directLeaf, claims, map[string]any{"x5c": x5cChain(directLeaf)}), ""},
		{"matching x5t#S256 alongside", certToken(t, leaf, claims, map[string]any{"x5c": x5cChain(leaf, inter), "x5t#S256": x5tS256(leaf)}), ""},
		{"mismatching x5t alongside", certToken(t, leaf, claims, map[string]any{"x5c": x5cChain(leaf, inter), "x5t": x5t(inter)}), ReasonUntrustedCert},
		{"missing intermediate", certToken(t, leaf, claims, map[string]any{"x5c": x5cChain(leaf)}), ReasonUntrustedCert},
		{"self-signed leaf", certToken(t, selfSigned, claims, map[string]any{"x5c": x5cChain(selfSigned)}), ReasonUntrustedCert},
		{"other root", certToken(t, otherLeaf, claims, map[string]any{"x5c": x5cChain(otherLeaf, otherRoot)}), ReasonUntrustedCert},
		{"expired leaf", certToken(t, expiredLeaf, claims, map[string]any{"x5c": x5cChain(expiredLeaf)}), ReasonUntrustedCert},
		{"iat before leaf NotBefore", certToken(t, youngLeaf, withIat(now.Add(-30*time.Minute)), map[string]any{"x5c": x5cChain(youngLeaf)}), ReasonUntrustedCert},
		{"iat after leaf NotBefore", certToken(t, youngLeaf, withIat(now.Add(-5*time.Minute)), map[string]any{"x5c": x5cChain(youngLeaf)}), ""},
		{"CA certificate as leaf", certToken(t, caLeaf, claims, map[string]any{"x5c": x5cChain(caLeaf)}), ReasonUntrustedCert},
		{"no digitalSignature", certToken(t, noDigSig, claims, map[string]any{"x5c": x5cChain(noDigSig)}), ReasonUntrustedCert},
		{"leaf valid but token signed by another key", certToken(t, selfSigned, claims, map[string]any{"x5c": x5cChain(leaf, inter)}), ReasonBadSignature},
		{"not base64", certToken(t, leaf, claims, map[string]any{"x5c": []string{"!!!"}}), ReasonMalformed},
		{"base64url instead of base64", certToken(t, leaf, claims, map[string]any{"x5c": []string{b64u(leaf.cert.Raw)}}), ReasonMalformed},
		{"not a certificate", certToken(t, leaf, claims, map[string]any{"x5c": []string{"AAAA"}}), ReasonMalformed},
		{"empty x5c", certToken(t, leaf, claims, map[string]any{"x5c": []string{}}), ReasonMalformed},
		{"x5c disabled for issuer", certToken(t, leaf, claimsFor("https://no-x5c.example", now), map[string]any{"x5c": x5cChain(leaf, inter)}), ReasonStrategyDisabled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := v.Verify(context.Background(), tc.tok)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason = %q, want %q (%v)", got, tc.want, err)
			}
			if err == nil && (res.Method != identity.MethodX5C || res.Certificate == nil) {
				t.Errorf("method = %s, cert = %v", res.Method, res.Certificate)
			}
		})
	}

	// Leaf certificate expires while tokens are in flight: rejected "now"
	// even though it was valid at iat.
	t.Run("leaf expired since iat", func(t *testing.T) {
		c := claimsFor(x5cIssuer, now)
		c["exp"] = now.Add(72 * time.Hour).Unix()
		short := issueCert(t, root, certOpts{cn: "short", notBefore: now.Add(-time.Hour), notAfter: now.Add(time.Hour)})
		tok := certToken(t, short, c, map[string]any{"x5c": x5cChain(short)})
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("before expiry: %v", err)
		}
		clock.Advance(2 * time.Hour)
		defer clock.Advance(-2 * time.Hour)
		_, err := v.Verify(context.Background(), tok)
		wantReason(t, err, ReasonUntrustedCert)
	})
}
