package assertion

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"
)

// TestLogLeakAssertionKeys: a key set, its minter and a verifier, all
// logging at DEBUG, through minting, verifying good, tampered, expired and
// misdirected assertions and two key rotations. No window of a signing
// key (keys.json's PKCS #8) nor of an assertion may be logged.
func TestLogLeakAssertionKeys(t *testing.T) {
	logs := &logtest.Buffer{}
	dbg := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clk := &clock{t: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	dir := filepath.Join(t.TempDir(), "assertion")
	keys, err := OpenKeySet(dir, WithKeyClock(clk.now), WithRotation(time.Hour), WithRetention(MaxTTL+DefaultClockSkew), WithKeyLogger(dbg))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(keys.Handler())
	t.Cleanup(srv.Close)
	minter, err := NewMinter(keys, issuer, td, WithTTL(MaxTTL), WithMintClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	ver, err := NewVerifier(context.Background(), VerifierConfig{Issuer: issuer, JWKSURI: srv.URL + JWKSPath, TrustDomain: td,
		Services: []string{"orders", "inventory"}, Chains: []Chain{{From: "orders", To: "inventory"}}}, jwt.WithClock(clk.now), jwt.WithLogger(dbg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ver.Close() })

	var secrets []string
	ctx := context.Background()
	for round := range 3 {
		tok, err := minter.Mint(Statement{Identity: alice("reader"), Service: "orders", DecisionID: "d", PolicyRevision: "r"})
		if err != nil {
			t.Fatal(err)
		}
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		tampered := tok[:strings.LastIndexByte(tok, '.')+1] + sig[4:] + sig[:4]
		secrets = append(secrets, sig, strings.Split(tok, ".")[1])
		for _, c := range []struct {
			tok string
			hop Hop
		}{
			{tok, Hop{Service: "orders", Peer: edge}},
			{tok, Hop{Service: "inventory", Peer: orders}},
			{tok, Hop{Service: "payments", Peer: orders}},
			{tok, Hop{Service: "orders", Peer: orders}},
			{tampered, Hop{Service: "orders", Peer: edge}},
			{tok + "x", Hop{Service: "orders", Peer: edge}},
		} {
			_, _ = ver.Verify(ctx, c.tok, c.hop)
		}
		clk.set(clk.now().Add(MaxTTL + time.Hour)) // expired, and due for rotation
		_, _ = ver.Verify(ctx, tok, Hop{Service: "orders", Peer: edge})
		if _, err := keys.Maintain(); err != nil {
			t.Fatalf("round %d: Maintain: %v", round, err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, keysFile))
	if err != nil {
		t.Fatal(err)
	}
	var stored storedKeys
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	for _, k := range stored.Keys {
		secrets = append(secrets, base64.StdEncoding.EncodeToString(k.PKCS8), base64.RawURLEncoding.EncodeToString(k.PKCS8), string(k.PKCS8))
	}
	out := logs.String()
	if !strings.Contains(out, "assertion key created") {
		t.Fatalf("no key rotation logged:\n%s", out)
	}
	for _, s := range secrets {
		for i := 0; i+16 <= len(s); i++ {
			if strings.Contains(out, s[i:i+16]) {
				t.Fatalf("secret window %q leaked:\n%s", s[i:i+16], out)
			}
		}
	}
}
