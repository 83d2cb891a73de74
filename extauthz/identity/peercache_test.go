package identity

import (
	"net/url"
	"testing"
)

func TestPeerCache(t *testing.T) {
	a := selfSigned(t, "spiffe://td/sidecar/a")
	b := selfSigned(t, "spiffe://td/sidecar/b")
	c := NewPeerCache(2)

	p1, err := c.Parse(a, "spiffe://td/sidecar/a")
	if err != nil || p1.SPIFFEID != "spiffe://td/sidecar/a" {
		t.Fatalf("parse: %+v %v", p1, err)
	}
	if p2, _ := c.Parse(a, "spiffe://td/sidecar/a"); p2 != p1 {
		t.Fatal("an equal certificate was parsed again")
	}
	// The principal is part of the key: Envoy's choice is reported as sent.
	if p3, _ := c.Parse(a, "other"); p3 == p1 || p3.Principal != "other" {
		t.Fatalf("principal not in the key: %+v", p3)
	}
	if _, err := c.Parse("%zz", ""); err == nil {
		t.Fatal("bad encoding accepted")
	}
	if _, err := c.Parse(url.QueryEscape("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), ""); err == nil {
		t.Fatal("bad certificate accepted")
	}
	for range 10 {
		if _, err := c.Parse(b, "spiffe://td/sidecar/b"); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Len(); n > 2 {
		t.Fatalf("%d entries in a cache of 2", n)
	}
	// Without a certificate, or with caching off, it is ParsePeer.
	if p, err := c.Parse("", "spiffe://td/x"); err != nil || p.SPIFFEID != "spiffe://td/x" {
		t.Fatalf("principal only: %+v %v", p, err)
	}
	if p, err := NewPeerCache(0).Parse(a, "x"); err != nil || p.Principal != "x" {
		t.Fatalf("uncached: %+v %v", p, err)
	}
}
