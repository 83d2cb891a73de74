package jwt

import (
	"context"
	"crypto/elliptic"
	"crypto/sha1" //nolint:gosec // x5t is SHA-1 by definition
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

func writePEM(t *testing.T, dir, name string, certs ...*testCert) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})...)
	}
	path := filepath.Join(dir, name)
	must(t, os.WriteFile(path, b, 0o600))
	return path
}

func x5t(c *testCert) string {
	s := sha1.Sum(c.cert.Raw) //nolint:gosec
	return b64u(s[:])
}

func x5tS256(c *testCert) string {
	s := sha256.Sum256(c.cert.Raw)
	return b64u(s[:])
}

// certToken signs claims with the certificate's key, header carrying hdr.
func certToken(t *testing.T, c *testCert, claims map[string]any, hdr map[string]any) string {
	t.Helper()
	k := testKey{alg: certAlg(c.key), priv: c.key}
	return k.token(t, claims, hdr)
}

const x5tIssuer = "https://sts.internal.example"

func TestTrustStoreX5T(t *testing.T) {
	dir := t.TempDir()
	clock := newTestClock()
	now := clock.Now()
	signer := issueCert(t, nil, certOpts{cn: "signer"})
	rsaSigner := issueCert(t, nil, certOpts{cn: "rsa-signer", key: testRSAKeys()[0]})
	expired := issueCert(t, nil, certOpts{cn: "expired", notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour)})
	notYet := issueCert(t, nil, certOpts{cn: "not-yet", notBefore: now.Add(time.Hour), notAfter: now.Add(48 * time.Hour)})
	noSig := issueCert(t, nil, certOpts{cn: "no-digsig", keyUsage: x509.KeyUsageKeyEncipherment})
	stranger := issueCert(t, nil, certOpts{cn: "stranger"})
	writePEM(t, dir, "signer.pem", signer)
	writePEM(t, dir, "bundle.crt", rsaSigner, expired, notYet, noSig)
	must(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("not a cert"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, ".hidden.pem"), []byte("junk"), 0o600))

	ts, err := NewTrustStore(dir, WithTrustStoreLogger(quietLogger()))
	must(t, err)
	if ts.Len() != 5 {
		t.Fatalf("Len = %d, want 5", ts.Len())
	}
	v := newTestVerifier(t, clock, []IssuerConfig{{
		Issuer: x5tIssuer, Audiences: []string{"api"}, X5T: true, Algorithms: []string{"ES256", "RS256"}, Kind: identity.KindService,
	}}, WithTrustStore(ts))
	claims := claimsFor(x5tIssuer, now)

	tests := []struct {
		name string
		tok  string
		want Reason
	}{
		{"x5t#S256", certToken(t, signer, claims, map[string]any{"x5t#S256": x5tS256(signer)}), ""},
		{"x5t", certToken(t, signer, claims, map[string]any{"x5t": x5t(signer)}), ""},
		{"both thumbprints", certToken(t, signer, claims, map[string]any{"x5t": x5t(signer), "x5t#S256": x5tS256(signer)}), ""},
		{"RSA cert from bundle", certToken(t, rsaSigner, claims, map[string]any{"x5t#S256": x5tS256(rsaSigner)}), ""},
		{"thumbprints of different certs", certToken(t, signer, claims, map[string]any{"x5t": x5t(rsaSigner), "x5t#S256": x5tS256(signer)}), ReasonUntrustedCert},
		{"not in store", certToken(t, stranger, claims, map[string]any{"x5t#S256": x5tS256(stranger)}), ReasonUntrustedCert},
		{"signed by other key", certToken(t, stranger, claims, map[string]any{"x5t#S256": x5tS256(signer)}), ReasonBadSignature},
		{"expired cert", certToken(t, expired, claims, map[string]any{"x5t#S256": x5tS256(expired)}), ReasonUntrustedCert},
		{"not yet valid cert", certToken(t, notYet, claims, map[string]any{"x5t#S256": x5tS256(notYet)}), ReasonUntrustedCert},
		{"no digitalSignature", certToken(t, noSig, claims, map[string]any{"x5t#S256": x5tS256(noSig)}), ReasonUntrustedCert},
		{"alg does not fit cert key", testKey{alg: "RS256", priv: testRSAKeys()[0]}.token(t, claims, map[string]any{"x5t#S256": x5tS256(signer)}), ReasonKeyMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := v.Verify(context.Background(), tc.tok)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason = %q, want %q (%v)", got, tc.want, err)
			}
			if err == nil && (res.Method != identity.MethodX5T || res.Certificate == nil || res.Kind != identity.KindService) {
				t.Errorf("method/cert/kind = %s/%v/%s", res.Method, res.Certificate != nil, res.Kind)
			}
		})
	}
}

func TestTrustStoreReload(t *testing.T) {
	dir := t.TempDir()
	clock := newTestClock()
	a := issueCert(t, nil, certOpts{cn: "a"})
	b := issueCert(t, nil, certOpts{cn: "b"})
	writePEM(t, dir, "a.pem", a)
	ts, err := NewTrustStore(dir, WithTrustStoreLogger(quietLogger()))
	must(t, err)
	v := newTestVerifier(t, clock, []IssuerConfig{{Issuer: x5tIssuer, Audiences: []string{"api"}, X5T: true, TrustStore: ts}}, WithCache(0, 0))
	ctx := context.Background()
	tokA := certToken(t, a, claimsFor(x5tIssuer, clock.Now()), map[string]any{"x5t#S256": x5tS256(a)})
	tokB := certToken(t, b, claimsFor(x5tIssuer, clock.Now()), map[string]any{"x5t#S256": x5tS256(b)})
	if _, err := v.Verify(ctx, tokA); err != nil {
		t.Fatal(err)
	}

	bad := []struct {
		name    string
		content string
		mention string
	}{
		{"not PEM", "hello", "not PEM"},
		{"empty file", "", "no PEM certificate"},
		{"private key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})), "PRIVATE KEY"},
		{"garbage certificate", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})), "PEM block 1"},
		{"trailing junk", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.cert.Raw})) + "junk", "trailing data"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			writePEM(t, dir, "b.pem", b)
			badPath := filepath.Join(dir, "zz-bad.pem")
			must(t, os.WriteFile(badPath, []byte(tc.content), 0o600))
			err := ts.Reload()
			if err == nil {
				t.Fatal("Reload accepted a bad file")
			}
			if !strings.Contains(err.Error(), badPath) || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q should name %s and mention %q", err, badPath, tc.mention)
			}
			// Last good set kept: a still works, b (added with the bad file)
			// is not in.
			if _, err := v.Verify(ctx, tokA); err != nil {
				t.Errorf("last good set lost: %v", err)
			}
			if _, err := v.Verify(ctx, tokB); ReasonOf(err) != ReasonUntrustedCert {
				t.Errorf("cert from failed reload is usable: %v", err)
			}
			must(t, os.Remove(badPath))
			must(t, os.Remove(filepath.Join(dir, "b.pem")))
		})
	}

	// A good reload adds b and, with a.pem removed, withdraws a.
	writePEM(t, dir, "b.pem", b)
	must(t, os.Remove(filepath.Join(dir, "a.pem")))
	must(t, ts.Reload())
	if _, err := v.Verify(ctx, tokB); err != nil {
		t.Errorf("new cert not picked up: %v", err)
	}
	if _, err := v.Verify(ctx, tokA); ReasonOf(err) != ReasonUntrustedCert {
		t.Errorf("removed cert still usable: %v", err)
	}

	// Directory gone: error, last good set kept.
	must(t, os.RemoveAll(dir))
	if err := ts.Reload(); err == nil {
		t.Error("Reload of missing directory succeeded")
	}
	if _, err := v.Verify(ctx, tokB); err != nil {
		t.Errorf("last good set lost after missing directory: %v", err)
	}
}

func TestNewTrustStoreErrors(t *testing.T) {
	if _, err := NewTrustStore(filepath.Join(t.TempDir(), "missing"), WithTrustStoreLogger(quietLogger())); err == nil {
		t.Error("missing directory accepted")
	}
	dir := t.TempDir()
	weak := issueCert(t, nil, certOpts{cn: "weak-curve", key: mustECKey(t, elliptic.P224())})
	path := writePEM(t, dir, "weak.pem", weak)
	_, err := NewTrustStore(dir, WithTrustStoreLogger(quietLogger()))
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("weak key cert: err = %v, want one naming %s", err, path)
	}
}
