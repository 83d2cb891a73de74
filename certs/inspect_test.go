package certs_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
)

func TestInspect(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk))
	leaf, err := ca.IssueRole("proxy", "edge", certs.WithDNSNames("edge.example"))
	if err != nil {
		t.Fatal(err)
	}
	combined := slices.Concat(leaf.CertPEM, leaf.KeyPEM, ca.CertPEM())

	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr string
	}{
		{name: "leaf", in: leaf.CertPEM, want: 1},
		{name: "leaf, key and CA", in: combined, want: 2},
		{name: "key only", in: leaf.KeyPEM, wantErr: "no CERTIFICATE"},
		{name: "garbage", in: []byte("nope"), wantErr: "PEM"},
		{name: "truncated", in: combined[:len(combined)-30], wantErr: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos, err := certs.Inspect(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Inspect error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(infos) != tt.want {
				t.Fatalf("Inspect = %d infos, %v; want %d", len(infos), err, tt.want)
			}
		})
	}

	infos, _ := certs.Inspect(combined)
	li, ci := infos[0], infos[1]
	sum := sha256.Sum256(leaf.Cert.Raw)
	if li.IsCA || !ci.IsCA || li.Serial != leaf.Serial ||
		!slices.Equal(li.URIs, []string{"spiffe://gatehouse.local/proxy/edge"}) ||
		!slices.Equal(li.DNSNames, []string{"edge.example"}) ||
		!strings.HasPrefix(li.SHA256, fmt.Sprintf("%02X:%02X:", sum[0], sum[1])) || len(li.SHA256) != 95 ||
		!li.NotAfter.Equal(leaf.NotAfter) || li.Issuer != ci.Subject {
		t.Fatalf("leaf info wrong: %+v / CA %+v", li, ci)
	}
	var buf bytes.Buffer
	if err := li.WriteText(&buf, t0.Add(48*60*60*1e9)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"spiffe://gatehouse.local/proxy/edge", "EXPIRED", "DNS SAN:", li.SHA256} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PRIVATE") {
		t.Error("inspect output mentions the private key")
	}
}
