package jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestVerifyRejectsAdversarialTokens complements TestVerifyRejects, TestX5C
// and TestTrustStoreX5T with forgeries those tables do not spell out: every
// token is built here (nothing stored), must be rejected, and must be
// rejected for the stated reason — a forged token refused for the wrong
// reason usually means a check further down the line is what saved us.
//
// Cases already covered elsewhere (alg none/NONE, HS256 with a random secret,
// '=' in the header, empty signature, flattened JSON serialization, JWE with
// four dots of garbage, jku/x5u/jwk headers, crit ["exp"], unknown kid,
// exp missing/zero/past, nbf/iat a little in the future, wrong aud, x5c
// self-signed/foreign/expired/CA leaf, x5t not in store, RSA-1024 in a
// JWKS, ECDSA r=s=0, tokens over MaxTokenBytes) are not repeated; the rows
// below are their variants and the rest of the hardening list.
func TestVerifyRejectsAdversarialTokens(t *testing.T) {
	rsaK := rsaTestKey("rsa", "RS256", 0)
	psK := rsaTestKey("ps", "PS256", 1)
	ecK := ecTestKey(t, "ec", "ES256", elliptic.P256())
	idp := newTestIdP(t, rsaK, psK, ecK)
	clock := newTestClock()
	now := clock.Now()
	iss := idp.issuer()

	// x5c: one trusted root; x5t: one trusted certificate in a store.
	root := issueCert(t, nil, certOpts{cn: "token-root", isCA: true})
	inter := issueCert(t, root, certOpts{cn: "token-intermediate", isCA: true})
	leaf := issueCert(t, inter, certOpts{cn: "device"})
	expiredInter := issueCert(t, root, certOpts{cn: "old-intermediate", isCA: true,
		notBefore: now.Add(-72 * time.Hour), notAfter: now.Add(-time.Hour)})
	leafUnderExpired := issueCert(t, expiredInter, certOpts{cn: "device-2"})
	// A root with the trusted root's name but another key: chains by name,
	// must not chain by signature.
	impostorRoot := issueCert(t, nil, certOpts{cn: "token-root", isCA: true})
	impostorLeaf := issueCert(t, impostorRoot, certOpts{cn: "device"})
	weakKey, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	weakLeaf := issueCert(t, root, certOpts{cn: "weak", key: weakKey})
	trusted := issueCert(t, nil, certOpts{cn: "sts-signer"})
	untrusted := issueCert(t, nil, certOpts{cn: "sts-signer"}) // same name, not in the store
	storeDir := t.TempDir()
	writePEM(t, storeDir, "trusted.pem", trusted)
	store, err := NewTrustStore(storeDir, WithTrustStoreLogger(quietLogger()))
	must(t, err)

	const (
		x5cIss = "https://devices.adversarial.example"
		x5tIss = "https://sts.adversarial.example"
	)
	v := newTestVerifier(t, clock, []IssuerConfig{
		{Issuer: iss, Audiences: []string{"api"}, DiscoveryURL: iss, Algorithms: []string{"RS256", "PS256", "ES256"}, MaxTokenBytes: 4096},
		{Issuer: x5cIss, Audiences: []string{"api"}, TrustedCAs: []*x509.Certificate{root.cert}, Algorithms: []string{"ES256", "RS256"}},
		{Issuer: x5tIss, Audiences: []string{"api"}, X5T: true, TrustStore: store, Algorithms: []string{"ES256"}},
	}, WithCache(0, 0))

	claims := func(issuer string, mod func(map[string]any)) map[string]any {
		c := claimsFor(issuer, now)
		if mod != nil {
			mod(c)
		}
		return c
	}
	good := func(mod func(map[string]any)) map[string]any { return claims(iss, mod) }
	valid := rsaK.token(t, good(nil), nil)
	parts := strings.Split(valid, ".")
	claimsJSON := mustJSON(t, good(nil))
	forged := mustJSON(t, good(func(c map[string]any) { c["sub"] = "mallory"; c["roles"] = []string{"admin"} }))
	hdr := func(s string) string { return b64u([]byte(s)) }
	// with swaps one part of the valid token.
	with := func(i int, s string) string {
		p := append([]string(nil), parts...)
		p[i] = s
		return strings.Join(p, ".")
	}

	// HMAC "key confusion": the attacker knows the RSA public key and uses
	// its encodings as the HMAC secret, hoping a verifier feeds the key
	// material it holds to HMAC when the header says HS256.
	pubDER, err := x509.MarshalPKIXPublicKey(rsaK.pub())
	must(t, err)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(rsaK.pub().(*rsa.PublicKey))})
	hs := func(alg string, secret []byte) string {
		si := hdr(`{"alg":"`+alg+`","kid":"rsa"}`) + "." + b64u(forged)
		var mac []byte
		switch alg {
		case "HS256":
			m := hmac.New(sha256.New, secret)
			m.Write([]byte(si))
			mac = m.Sum(nil)
		default:
			m := hmac.New(crypto.SHA512.New, secret)
			m.Write([]byte(si))
			mac = m.Sum(nil)
		}
		return si + "." + b64u(mac)
	}

	// Signatures that are "almost" right.
	hRS := []byte(`{"alg":"RS256","kid":"rsa"}`)
	hPS := []byte(`{"alg":"PS256","kid":"ps"}`)
	hEC := []byte(`{"alg":"ES256","kid":"ec"}`)
	pss := func(saltLen int) string {
		si := b64u(hPS) + "." + b64u(claimsJSON)
		d := sha256.Sum256([]byte(si))
		sig, err := rsa.SignPSS(rand.Reader, psK.priv.(*rsa.PrivateKey), crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: saltLen})
		must(t, err)
		return si + "." + b64u(sig)
	}
	ecSI := b64u(hEC) + "." + b64u(claimsJSON)
	ecDigest := sha256.Sum256([]byte(ecSI))
	derSig, err := ecdsa.SignASN1(rand.Reader, ecK.priv.(*ecdsa.PrivateKey), ecDigest[:])
	must(t, err)
	n := elliptic.P256().Params().N.FillBytes(make([]byte, 32))
	ecValid := signRaw(t, hEC, claimsJSON, "ES256", ecK.priv)
	ecSig := mustB64(t, strings.Split(ecValid, ".")[2])
	otherValid := rsaK.token(t, good(func(c map[string]any) { c["sub"] = "bob" }), nil)

	// JWS JSON serialization carrying claims outside the signature: the
	// protected header and signature are genuine, "payload" and the
	// unprotected "header" are the attacker's.
	generalJSON := `{"payload":"` + b64u(forged) + `","signatures":[{"protected":"` + parts[0] +
		`","header":{"kid":"rsa","alg":"RS256"},"signature":"` + parts[2] + `"}]}`
	flattenedUnprotected := `{"payload":"` + parts[1] + `","protected":"` + parts[0] +
		`","header":{"sub":"mallory"},"signature":"` + parts[2] + `"}`

	// Encodings a lax decoder would accept.
	tildeClaims := mustJSON(t, good(func(c map[string]any) { c["pad"] = "~~~>>>???" })) // std base64 has '+' and '/'
	tilde := signRaw(t, hRS, tildeClaims, "RS256", rsaK.priv)
	tp := strings.Split(tilde, ".")
	stdPayload := base64.RawStdEncoding.EncodeToString(tildeClaims)
	if !strings.ContainsAny(stdPayload, "+/") {
		t.Fatal("fixture: payload has no '+' or '/' in standard base64")
	}

	dupMember := func(obj []byte, member string) []byte { return dupClaim(obj, member) }
	huge := strings.Repeat("A", 2<<20)

	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		// alg.
		{"alg nOnE unsigned", hdr(`{"alg":"nOnE","kid":"rsa"}`) + "." + b64u(forged) + ".", ReasonAlgNotAllowed},
		{"alg nOnE with junk signature", hdr(`{"alg":"nOnE","kid":"rsa"}`) + "." + b64u(forged) + ".AAAA", ReasonAlgNotAllowed},
		{"alg none keeping the real signature", with(0, hdr(`{"alg":"none","kid":"rsa"}`)), ReasonAlgNotAllowed},
		{"alg lower-case rs256", with(0, hdr(`{"alg":"rs256","kid":"rsa"}`)), ReasonAlgNotAllowed},
		{"alg with trailing space", with(0, hdr(`{"alg":"RS256 ","kid":"rsa"}`)), ReasonAlgNotAllowed},
		{"alg as array", with(0, hdr(`{"alg":["RS256"],"kid":"rsa"}`)), ReasonMalformed},
		{"HS256 keyed with the RSA public key PEM", hs("HS256", pubPEM), ReasonAlgNotAllowed},
		{"HS256 keyed with the PKCS#1 public key PEM", hs("HS256", pkcs1PEM), ReasonAlgNotAllowed},
		{"HS256 keyed with the public key DER", hs("HS256", pubDER), ReasonAlgNotAllowed},
		{"HS256 with an empty secret", hs("HS256", nil), ReasonAlgNotAllowed},
		{"HS512 keyed with the RSA public key PEM", hs("HS512", pubPEM), ReasonAlgNotAllowed},

		// Signature.
		{"signature truncated by one character", with(2, parts[2][:len(parts[2])-1]), ReasonMalformed},
		{"signature cut to half", with(2, b64u(mustB64(t, parts[2])[:128])), ReasonBadSignature},
		{"signature one zero byte", with(2, "AA"), ReasonBadSignature},
		{"signature of another token", with(2, strings.Split(otherValid, ".")[2]), ReasonBadSignature},
		{"signature bit flipped", with(2, flipFirstBit(parts[2])), ReasonBadSignature},
		{"PS256 with salt length 0", pss(0), ReasonBadSignature},
		{"PS256 with maximal salt length", pss(rsa.PSSSaltLengthAuto), ReasonBadSignature},
		{"PS256 with 20-byte salt", pss(20), ReasonBadSignature},
		{"RS256 signature under PS256 header", signRaw(t, hPS, claimsJSON, "RS256", psK.priv), ReasonBadSignature},
		{"ES256 ASN.1 DER signature", ecSI + "." + b64u(derSig), ReasonBadSignature},
		{"ES256 r=s=n", ecSI + "." + b64u(append(append([]byte{}, n...), n...)), ReasonBadSignature},
		{"ES256 r=0 s=valid", ecSI + "." + b64u(append(make([]byte, 32), ecSig[32:]...)), ReasonBadSignature},
		{"ES256 signature with extra byte", ecSI + "." + b64u(append(append([]byte{}, ecSig...), 0)), ReasonBadSignature},

		// Serialization.
		{"general JSON serialization with forged payload", generalJSON, ReasonMalformed},
		{"flattened JSON with unprotected claims", flattenedUnprotected, ReasonMalformed},
		{"JSON serialization after whitespace", "\n " + flattenedUnprotected, ReasonMalformed},
		{"JWE compact (dir, empty key part)", hdr(`{"alg":"dir","enc":"A256GCM","kid":"rsa"}`) + "..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA", ReasonMalformed},
		{"JWE compact (RSA-OAEP)", hdr(`{"alg":"RSA-OAEP-256","enc":"A256GCM"}`) + "." + parts[2] + ".AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA", ReasonMalformed},
		{"three parts with a JWE enc header", rsaK.token(t, good(nil), map[string]any{"enc": "A256GCM"}), ReasonForbiddenHeader},
		{"zip header", rsaK.token(t, good(nil), map[string]any{"zip": "DEF"}), ReasonForbiddenHeader},
		{"padding on the payload", parts[0] + "." + parts[1] + "==." + parts[2], ReasonMalformed},
		{"padding on the signature", parts[0] + "." + parts[1] + "." + parts[2] + "==", ReasonMalformed},
		{"standard base64 payload", tp[0] + "." + stdPayload + "." + tp[2], ReasonMalformed},
		{"standard base64 signature", tp[0] + "." + tp[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(tp[2]) + "/", ReasonMalformed},
		{"trailing newline", valid + "\n", ReasonMalformed},
		{"trailing CRLF", valid + "\r\n", ReasonMalformed},
		{"tab between parts", parts[0] + ".\t" + parts[1] + "." + parts[2], ReasonMalformed},
		{"NUL byte", valid[:10] + "\x00" + valid[10:], ReasonMalformed},
		{"non-breaking space", valid + "\u00a0", ReasonMalformed},
		{"Bearer prefix left in", "Bearer " + valid, ReasonMalformed},

		// Duplicate members.
		{"duplicate exp, later far in the future", signRaw(t, hRS, dupMember(mustJSON(t, good(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })), `"exp":99999999999`), "RS256", rsaK.priv), ReasonDuplicateKey},
		{"duplicate aud", signRaw(t, hRS, dupMember(mustJSON(t, good(func(c map[string]any) { c["aud"] = "web" })), `"aud":"api"`), "RS256", rsaK.priv), ReasonDuplicateKey},
		{"duplicate kid", signRaw(t, []byte(`{"alg":"RS256","kid":"nope","kid":"rsa"}`), claimsJSON, "RS256", rsaK.priv), ReasonDuplicateKey},
		{"duplicate alg none then RS256", signRaw(t, []byte(`{"alg":"none","alg":"RS256","kid":"rsa"}`), claimsJSON, "RS256", rsaK.priv), ReasonDuplicateKey},

		// crit and key-bearing headers.
		{"crit b64 without b64", rsaK.token(t, good(nil), map[string]any{"crit": []string{"b64"}}), ReasonUnsupportedCrit},
		{"crit empty list", rsaK.token(t, good(nil), map[string]any{"crit": []string{}}), ReasonUnsupportedCrit},
		{"crit private extension", rsaK.token(t, good(nil), map[string]any{"crit": []string{"urn:example:ext"}, "urn:example:ext": true}), ReasonUnsupportedCrit},
		{"embedded jwk of the signing attacker key", testKey{kid: "rsa", alg: "ES256", priv: ecTestKey(t, "", "ES256", elliptic.P256()).priv}.token(t, good(nil), map[string]any{"jwk": json.RawMessage(jwkOf(t, ecK))}), ReasonForbiddenHeader},
		{"jku pointing at the real IdP", rsaK.token(t, good(nil), map[string]any{"jku": iss + "/jwks"}), ReasonForbiddenHeader},
		{"x5u with x5c", certToken(t, leaf, claims(x5cIss, nil), map[string]any{"x5c": x5cChain(leaf, inter), "x5u": "https://evil.example/c.pem"}), ReasonForbiddenHeader},

		// kid.
		{"kid path traversal", testKey{kid: "../../../../dev/null", alg: "RS256", priv: rsaK.priv}.token(t, good(nil), nil), ReasonUnknownKID},
		{"kid absolute path", testKey{kid: "/etc/passwd", alg: "RS256", priv: rsaK.priv}.token(t, good(nil), nil), ReasonUnknownKID},
		{"kid SQL injection", testKey{kid: "x' UNION SELECT 'secret' --", alg: "RS256", priv: rsaK.priv}.token(t, good(nil), nil), ReasonUnknownKID},
		{"kid with NUL suffix", testKey{kid: "rsa\x00", alg: "RS256", priv: rsaK.priv}.token(t, good(nil), nil), ReasonUnknownKID},
		{"kid differing in case", testKey{kid: "RSA", alg: "RS256", priv: rsaK.priv}.token(t, good(nil), nil), ReasonUnknownKID},
		{"kid empty string", rsaK.token(t, good(nil), map[string]any{"kid": ""}), ReasonMissingKID},

		// x5c and x5t.
		{"x5c under an impostor root with the trusted name", certToken(t, impostorLeaf, claims(x5cIss, nil), map[string]any{"x5c": x5cChain(impostorLeaf, impostorRoot)}), ReasonUntrustedCert},
		{"x5c the trusted root itself as leaf", certToken(t, root, claims(x5cIss, nil), map[string]any{"x5c": x5cChain(root)}), ReasonUntrustedCert},
		{"x5c through an expired intermediate", certToken(t, leafUnderExpired, claims(x5cIss, nil), map[string]any{"x5c": x5cChain(leafUnderExpired, expiredInter)}), ReasonUntrustedCert},
		{"x5c leaf with an RSA-1024 key", certToken(t, weakLeaf, claims(x5cIss, nil), map[string]any{"x5c": x5cChain(weakLeaf)}), ReasonWeakKey},
		{"x5c with nine certificates", certToken(t, leaf, claims(x5cIss, nil), map[string]any{"x5c": x5cChain(leaf, inter, inter, inter, inter, inter, inter, inter, root)}), ReasonMalformed},
		{"x5c valid chain but token for the JWKS issuer", certToken(t, leaf, good(nil), map[string]any{"x5c": x5cChain(leaf, inter)}), ReasonStrategyDisabled},
		{"x5t SHA-1 of an untrusted cert", certToken(t, untrusted, claims(x5tIss, nil), map[string]any{"x5t": x5t(untrusted)}), ReasonUntrustedCert},
		{"x5t#S256 of an untrusted cert with the trusted name", certToken(t, untrusted, claims(x5tIss, nil), map[string]any{"x5t#S256": x5tS256(untrusted)}), ReasonUntrustedCert},
		{"x5t#S256 of the trusted cert, signed by the impostor", certToken(t, untrusted, claims(x5tIss, nil), map[string]any{"x5t#S256": x5tS256(trusted)}), ReasonBadSignature},

		// Claims.
		{"exp negative", rsaK.token(t, good(func(c map[string]any) { c["exp"] = -1 }), nil), ReasonInvalidClaim},
		{"exp null", rsaK.token(t, good(func(c map[string]any) { c["exp"] = nil }), nil), ReasonInvalidClaim},
		{"exp 1 (1970)", rsaK.token(t, good(func(c map[string]any) { c["exp"] = 1 }), nil), ReasonExpired},
		{"exp as array", rsaK.token(t, good(func(c map[string]any) { c["exp"] = []int64{now.Add(time.Hour).Unix()} }), nil), ReasonInvalidClaim},
		{"nbf in year 3000", rsaK.token(t, good(func(c map[string]any) { c["nbf"] = 32503680000 }), nil), ReasonNotYetValid},
		{"iat in year 3000", rsaK.token(t, good(func(c map[string]any) { c["iat"] = 32503680000 }), nil), ReasonIssuedInFuture},
		{"iss in upper case", rsaK.token(t, good(func(c map[string]any) { c["iss"] = strings.ToUpper(iss) }), nil), ReasonUnknownIssuer},
		{"iss as array", rsaK.token(t, good(func(c map[string]any) { c["iss"] = []string{iss} }), nil), ReasonUnknownIssuer},
		{"iss with trailing space", rsaK.token(t, good(func(c map[string]any) { c["iss"] = iss + " " }), nil), ReasonUnknownIssuer},
		{"iss of the x5t issuer, key from JWKS", rsaK.token(t, claims(x5tIss, nil), nil), ReasonAlgNotAllowed},
		{"aud empty array", rsaK.token(t, good(func(c map[string]any) { c["aud"] = []string{} }), nil), ReasonWrongAudience},
		{"aud in upper case", rsaK.token(t, good(func(c map[string]any) { c["aud"] = "API" }), nil), ReasonWrongAudience},
		{"aud prefix", rsaK.token(t, good(func(c map[string]any) { c["aud"] = "ap" }), nil), ReasonWrongAudience},
		{"sub not a string", rsaK.token(t, good(func(c map[string]any) { c["sub"] = 1 }), nil), ReasonInvalidClaim},

		// Size.
		{"2 MiB token", huge + "." + huge + "." + huge, ReasonTooLarge},
		{"oversized header alone", hdr(`{"alg":"RS256","kid":"rsa","x":"`+strings.Repeat("a", 20000)+`"}`) + "." + parts[1] + "." + parts[2], ReasonTooLarge},
		{"over the issuer limit, under the global one", rsaK.token(t, good(func(c map[string]any) { c["pad"] = strings.Repeat("a", 6000) }), nil), ReasonTooLarge},
		{"deeply nested header", hdr(`{"alg":"RS256","kid":"rsa","x":`+strings.Repeat(`{"a":`, 40)+`1`+strings.Repeat(`}`, 40)+`}`) + "." + parts[1] + "." + parts[2], ReasonMalformed},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d adversarial tokens", len(tests))
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			res, err := v.Verify(context.Background(), tc.token)
			if err == nil {
				t.Fatalf("Verify accepted a forged token: subject %q", res.Subject)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			if e.Reason != tc.want {
				t.Errorf("reason = %q, want %q (error: %v)", e.Reason, tc.want, err)
			}
			assertNoTokenLeak(t, err, tc.token)
		})
	}

	// The fixtures are sound: the untampered tokens of each strategy verify.
	for name, tok := range map[string]string{
		"jwks RS256": valid,
		"jwks PS256": pss(32),
		"jwks ES256": ecValid,
		"x5c":        certToken(t, leaf, claims(x5cIss, nil), map[string]any{"x5c": x5cChain(leaf, inter)}),
		"x5t":        certToken(t, trusted, claims(x5tIss, nil), map[string]any{"x5t#S256": x5tS256(trusted)}),
		"std-safe":   tilde,
	} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Errorf("fixture %s: valid token rejected: %v", name, err)
		}
	}
}

// flipFirstBit changes the top bit of the first decoded byte, keeping the
// encoding canonical.
func flipFirstBit(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	first := strings.IndexByte(alphabet, s[0])
	return string(alphabet[first^32]) + s[1:]
}
