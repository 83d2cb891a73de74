package certs_test

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
)

func TestParseLeafRoundTrip(t *testing.T) {
	_, ca := initCA(t)
	leaf, err := ca.Issue("spiffe://gatehouse.local/sidecar/orders", certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue("spiffe://gatehouse.local/sidecar/other", certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		chain, key []byte
		ok         bool
	}{
		{"issued leaf", leaf.ChainPEM, leaf.KeyPEM, true},
		{"key of another leaf", leaf.ChainPEM, other.KeyPEM, false},
		{"no key", leaf.ChainPEM, nil, false},
		{"CA certificate", ca.CertPEM(), leaf.KeyPEM, false},
		{"truncated", leaf.ChainPEM[:len(leaf.ChainPEM)/2], leaf.KeyPEM, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := certs.ParseLeaf(tc.chain, tc.key)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				if bytes.Contains([]byte(err.Error()), []byte("PRIVATE")) {
					t.Fatal("error shows key material")
				}
				return
			}
			if got.Serial != leaf.Serial || got.SPIFFEID != leaf.SPIFFEID || !got.NotAfter.Equal(leaf.NotAfter) ||
				!bytes.Equal(got.CertPEM, leaf.CertPEM) || !got.SignedBy(ca.Certificate()) {
				t.Fatalf("parsed %v, want %v", got, leaf)
			}
		})
	}
}

func TestDeriveKeyPerCAAndPurpose(t *testing.T) {
	_, a := initCA(t)
	_, b := initCA(t)
	ka1, _ := a.DeriveKey("p")
	ka2, _ := a.DeriveKey("p")
	kq, _ := a.DeriveKey("q")
	kb, _ := b.DeriveKey("p")
	if len(ka1) != 32 || !bytes.Equal(ka1, ka2) || bytes.Equal(ka1, kq) || bytes.Equal(ka1, kb) {
		t.Fatal("derived keys are not stable per CA and purpose")
	}
	if _, err := a.DeriveKey(""); err == nil {
		t.Fatal("empty purpose accepted")
	}
}

func TestRotatorAdopt(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk))
	r := certs.NewRotator(ca, certs.WithRotatorClock(clk), certs.WithRotatorLogger(slog.New(slog.DiscardHandler)))
	rotations := startRotator(t, r)
	const id = "spiffe://gatehouse.local/sidecar/orders"
	held, err := r.Get(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := ca.Issue(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if r.Adopt(id, held) {
		t.Error("adopted the leaf already held")
	}
	if r.Adopt("spiffe://gatehouse.local/sidecar/unknown", elsewhere) {
		t.Error("adopted a leaf for an identity not kept")
	}
	if !r.Adopt(id, elsewhere) {
		t.Fatal("did not adopt a leaf issued elsewhere")
	}
	if got := nextRotation(t, rotations); got.leaf.Serial != elsewhere.Serial {
		t.Fatalf("subscribers told of %s, want %s", got.leaf.Serial, elsewhere.Serial)
	}
	if cur, _ := r.Current(id); cur.Serial != elsewhere.Serial {
		t.Fatalf("current %s, want the adopted %s", cur.Serial, elsewhere.Serial)
	}
	if next, _ := r.NextRenewal(); !next.Equal(elsewhere.RenewAt()) {
		t.Fatalf("next renewal %s, want the adopted leaf's %s", next, elsewhere.RenewAt())
	}
	clk.Advance(2 * time.Hour)
	expired, _ := ca.Issue(id, certs.WithTTL(time.Hour))
	clk.Advance(2 * time.Hour)
	if r.Adopt(id, expired) {
		t.Error("adopted an expired leaf")
	}
}
