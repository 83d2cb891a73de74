package oidc

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

// FuzzDecodeCookie drives the browser-session cookie decoding path —
// Cookie header parsing, chunk reassembly, unsealing — with arbitrary
// headers. It must never panic, and nothing but a value this test sealed
// ever opens: the AEAD cannot be forged, truncated, re-chunked into
// something else or moved to another cookie's purpose.
func FuzzDecodeCookie(f *testing.F) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		f.Fatal(err)
	}
	s, err := newSealer([][]byte{k})
	if err != nil {
		f.Fatal(err)
	}
	const name = "__Host-gatehouse"
	purpose := "session|" + name
	payload := []byte(`{"id":"s1","sub":"alice"}`)
	sealed := s.seal(purpose, payload)
	other := s.seal("login|"+name, payload)
	big := s.seal(purpose, bytes.Repeat([]byte("g"), 2*maxChunk))

	var chunked []string
	for i := 0; i*maxChunk < len(big); i++ {
		end := min((i+1)*maxChunk, len(big))
		chunked = append(chunked, chunkName(name, i)+"="+big[i*maxChunk:end])
	}
	for _, h := range []string{
		"",
		name + "=" + sealed,
		name + "=\"" + sealed + "\"; other=1",
		"a=b; " + name + "=" + sealed[:len(sealed)-2],
		name + "=" + other,
		strings.Join(chunked, "; "),
		strings.Join([]string{chunked[1], chunked[0]}, "; "),
		name + "=; " + name + "=" + sealed,
		";;;==; =x; " + name,
	} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, header string) {
		jar := parseCookies(header)
		v, ok := jar.readChunked(name, 4)
		if !ok {
			return
		}
		pt, err := s.open(purpose, v)
		if err != nil {
			return
		}
		if v != sealed && v != big {
			t.Fatalf("a value the test never sealed opened: %q", v)
		}
		if !bytes.Equal(pt, payload) && !bytes.Equal(pt, bytes.Repeat([]byte("g"), 2*maxChunk)) {
			t.Fatalf("opened to unexpected plaintext %q", pt)
		}
	})
}
