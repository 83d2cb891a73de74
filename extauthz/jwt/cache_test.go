package jwt

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestCacheHitSkipsVerification(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	j := newJWKSTest(t, []testKey{a})
	tok := j.token(t, a)
	first, err := j.verify(tok)
	must(t, err)

	// Withdraw a at the IdP. The cached result is still served, proving the
	// cache path does not re-verify; a fresh token for a is rejected.
	j.idp.setKeys(t, rsaTestKey("b", "RS256", 1))
	must(t, j.v.Refresh(context.Background()))
	second, err := j.verify(tok)
	must(t, err)
	if second != first {
		t.Error("cache hit returned a different result")
	}
	_, err = j.verify(a.token(t, j.claims(), map[string]any{"n": 1}))
	wantReason(t, err, ReasonUnknownKID)

	// Purge drops it.
	j.v.Purge()
	_, err = j.verify(tok)
	wantReason(t, err, ReasonUnknownKID)
}

func TestCacheNeverOutlivesExpOrMaxTTL(t *testing.T) {
	tests := []struct {
		name    string
		expIn   time.Duration
		maxTTL  time.Duration
		advance time.Duration
	}{
		{"bounded by exp", 2 * time.Minute, time.Hour, 2 * time.Minute},
		{"bounded by max TTL", time.Hour, time.Minute, time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := rsaTestKey("a", "RS256", 0)
			j := newJWKSTest(t, []testKey{a}, WithCache(100, tc.maxTTL))
			c := j.claims()
			c["exp"] = j.clock.Now().Add(tc.expIn).Unix()
			tok := a.token(t, c, nil)
			_, err := j.verify(tok)
			must(t, err)

			// Withdraw the key: from now on only a cache hit can succeed.
			j.idp.setKeys(t, rsaTestKey("b", "RS256", 1))
			must(t, j.v.Refresh(context.Background()))
			j.clock.Advance(tc.advance - time.Second)
			if _, err := j.verify(tok); err != nil {
				t.Fatalf("just before the bound: %v (want cache hit)", err)
			}
			j.clock.Advance(time.Second)
			if _, err := j.verify(tok); err == nil {
				t.Fatal("cache served an entry at its bound")
			}
		})
	}
}

func TestCacheDoesNotCacheFailures(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	b := rsaTestKey("b", "RS256", 1)
	j := newJWKSTest(t, []testKey{a})
	tok := j.token(t, b)
	_, err := j.verify(tok)
	wantReason(t, err, ReasonUnknownKID)
	j.idp.setKeys(t, a, b)
	j.clock.Advance(11 * time.Second)
	if _, err := j.verify(tok); err != nil {
		t.Fatalf("failure was cached: %v", err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	c := newResultCache(64, time.Hour)
	now := time.Now()
	res := &Result{Expiry: now.Add(time.Hour)}
	for i := range 1000 {
		k := cacheKey{}
		copy(k[:], fmt.Sprintf("%032d", i))
		k[0] = byte(i)
		c.put(&k, res, now, 0)
	}
	if n := c.len(); n > 64 {
		t.Fatalf("cache holds %d entries, limit 64", n)
	}
	// LRU: the most recent key is present, the first is gone.
	var last, first cacheKey
	copy(last[:], fmt.Sprintf("%032d", 999))
	last[0] = byte(999 % 256)
	copy(first[:], fmt.Sprintf("%032d", 0))
	first[0] = 0
	if _, ok := c.get(&last, now); !ok {
		t.Error("most recent entry evicted")
	}
	if _, ok := c.get(&first, now); ok {
		t.Error("oldest entry survived 1000 inserts")
	}
	if newResultCache(0, time.Hour) != nil {
		t.Error("size 0 should disable the cache")
	}
}

func TestCacheDisabled(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	j := newJWKSTest(t, []testKey{a}, WithCache(0, 0))
	tok := j.token(t, a)
	r1, err := j.verify(tok)
	must(t, err)
	r2, err := j.verify(tok)
	must(t, err)
	if r1 == r2 {
		t.Error("results shared although the cache is disabled")
	}
}

// BenchmarkVerifyRS256 measures the cache-miss path: strict parsing, claims
// decoding, JWKS lookup, RS256 verification and claim checks.
func BenchmarkVerifyRS256(b *testing.B) {
	benchmarkVerify(b, rsaTestKey("a", "RS256", 0), false)
}

func BenchmarkVerifyES256(b *testing.B) {
	benchmarkVerify(b, ecTestKey(b, "a", "ES256", elliptic.P256()), false)
}

// BenchmarkVerifyCached measures the fast path for a repeated token.
func BenchmarkVerifyCached(b *testing.B) {
	benchmarkVerify(b, rsaTestKey("a", "RS256", 0), true)
}

func benchmarkVerify(b *testing.B, k testKey, cached bool) {
	opts := []Option{WithCache(0, 0)}
	if cached {
		opts = nil
	}
	j := newJWKSTest(b, []testKey{k}, opts...)
	ctx := context.Background()
	n := 256
	if cached {
		n = 1
	}
	toks := make([]string, n)
	for i := range toks {
		c := j.claims()
		c["jti"] = fmt.Sprint(i)
		toks[i] = k.token(b, c, nil)
	}
	if _, err := j.v.Verify(ctx, toks[0]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := j.v.Verify(ctx, toks[i%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestCacheHitKeepsNotBeforeWindow: a cached result is served only while
// verification would accept the token's nbf and iat, so a clock stepped
// back does not get from the cache what verification refuses.
func TestCacheHitKeepsNotBeforeWindow(t *testing.T) {
	tests := []struct {
		name string
		nbf  time.Duration // from the first Verify (iat is at it); 0: no nbf
		back time.Duration // clock stepped back before the second Verify
		want Reason        // "" for a cache hit
	}{
		{name: "no step", nbf: 30 * time.Second},
		{name: "nbf at the skew bound", nbf: 30 * time.Second, back: 30 * time.Second},
		{name: "nbf past the skew bound", nbf: 30 * time.Second, back: 31 * time.Second, want: ReasonNotYetValid},
		{name: "iat at the skew bound", back: DefaultClockSkew},
		{name: "iat past the skew bound", back: DefaultClockSkew + time.Second, want: ReasonIssuedInFuture},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := rsaTestKey("a", "RS256", 0)
			j := newJWKSTest(t, []testKey{a})
			c := j.claims()
			delete(c, "nbf")
			if tc.nbf != 0 {
				c["nbf"] = j.clock.Now().Add(tc.nbf).Unix()
			}
			tok := a.token(t, c, nil)
			first, err := j.verify(tok)
			must(t, err)
			j.clock.Advance(-tc.back)
			second, err := j.verify(tok)
			if tc.want != "" {
				wantReason(t, err, tc.want)
				return
			}
			must(t, err)
			if second != first {
				t.Error("not served from the cache")
			}
		})
	}
}

func TestCacheKeyIsSHA256OfToken(t *testing.T) {
	for _, n := range []int{0, 1, 700, stackHashBytes - 1, stackHashBytes, stackHashBytes + 1, 3 * stackHashBytes} {
		tok := strings.Repeat("a.b-c_", n/6+1)[:n]
		if got, want := cacheKeyOf(tok), cacheKey(sha256.Sum256([]byte(tok))); got != want {
			t.Errorf("%d bytes: key %x, want %x", n, got, want)
		}
	}
}

// TestCacheHitDoesNotAllocate pins the cost of a repeated token: hashing and
// a map lookup, no parsing and no allocation.
func TestCacheHitDoesNotAllocate(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	j := newJWKSTest(t, []testKey{a})
	ctx := context.Background()
	tok := j.token(t, a)
	_, err := j.v.Verify(ctx, tok)
	must(t, err)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := j.v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("cache hit allocates %v times", n)
	}
}
