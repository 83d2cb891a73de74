package store

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealer(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	old, err := NewSealer(k1)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := NewSealer(k2, k1)
	if err != nil {
		t.Fatal(err)
	}
	sealedOld := old.Seal("cert/spiffe://td/a", []byte("private key"))
	if bytes.Contains(sealedOld, []byte("private key")) {
		t.Fatal("plaintext visible in the sealed value")
	}
	tamper := bytes.Clone(sealedOld)
	tamper[len(tamper)-1] ^= 1
	tests := []struct {
		name    string
		s       *Sealer
		purpose string
		sealed  []byte
		want    string
	}{
		{"same key, same purpose", old, "cert/spiffe://td/a", sealedOld, "private key"},
		{"old key still opens after rotation", rotated, "cert/spiffe://td/a", sealedOld, "private key"},
		{"new key seals", rotated, "p", rotated.Seal("p", []byte("x")), "x"},
		{"other purpose", old, "cert/spiffe://td/b", sealedOld, ""},
		{"tampered", old, "cert/spiffe://td/a", tamper, ""},
		{"new key unknown to old sealer", old, "p", rotated.Seal("p", []byte("x")), ""},
		{"short", old, "p", []byte{1, 2, 3}, ""},
		{"empty", old, "p", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.Open(tc.purpose, tc.sealed)
			if tc.want == "" {
				if !errors.Is(err, ErrUnsealed) {
					t.Errorf("Open = %q, %v; want ErrUnsealed", got, err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Errorf("Open = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if !bytes.Equal(old.Seal("p", nil)[:5], old.Seal("p", nil)[:5]) || bytes.Equal(old.Seal("p", nil), old.Seal("p", nil)) {
		t.Error("nonces are not random")
	}
	if _, err := NewSealer(); err == nil {
		t.Error("no keys accepted")
	}
	if _, err := NewSealer([]byte("short")); err == nil {
		t.Error("short key accepted")
	}
}
