package oidc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestSafeReturnPath(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"/", true},
		{"/app/reports?year=2026&q=a%20b", true},
		{"/a/b%2Fc", true}, // an encoded slash inside a segment is not a new origin
		{"/search?next=//evil.example", true},
		{"", false},
		{"app", false},
		{"//evil.example", false},
		{"//evil.example/path", false},
		{`/\evil.example`, false},
		{`/\/evil.example`, false},
		{"/%2F%2Fevil.example", false},
		{"/%2f%2fevil.example", false},
		{"/%2F/evil.example", false},
		{"/%5Cevil.example", false},
		{"/%5cevil.example", false},
		{"/%252F%252Fevil.example", false},
		{"/%25252F%25252Fevil.example", false},
		{"/%2525252F%2525252F", false}, // too deeply encoded
		{"https://evil.example/", false},
		{"http:evil.example", false},
		{"/./evil", false},
		{"/a/../b", false},
		{"/.%2F/evil.example", false},
		{"/app\r\nSet-Cookie: x=y", false},
		{"/app\x00", false},
		{"/%00", false},
		{"/%0d%0aLocation:%20x", false},
		{"/app\t", false},
		{"/caf\xc3\xa9", false},
		{"/%zz", false},
		{"/" + strings.Repeat("a", maxReturnPath), false},
	}
	for _, tt := range tests {
		got, ok := safeReturnPath(tt.in)
		if ok != tt.ok || (ok && got != tt.in) {
			t.Errorf("safeReturnPath(%q) = %q, %v; want ok=%v", tt.in, got, ok, tt.ok)
		}
	}
}

func key(t testing.TB) []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealer(t *testing.T) {
	k1, k2 := key(t), key(t)
	old, _ := newSealer([][]byte{k1})
	rotated, _ := newSealer([][]byte{k2, k1})
	retired, _ := newSealer([][]byte{k2})

	v := old.seal("session|a", []byte("payload"))
	if pt, err := rotated.open("session|a", v); err != nil || string(pt) != "payload" {
		t.Fatalf("rotated keyring cannot open the old key's value: %v", err)
	}
	if _, err := retired.open("session|a", v); err == nil {
		t.Error("retired key still opens")
	}
	if _, err := old.open("session|b", v); err == nil {
		t.Error("value opened under another purpose")
	}
	if v2 := rotated.seal("session|a", []byte("payload")); strings.HasPrefix(v2, v[:8]) {
		t.Error("new values not sealed with the first key")
	}
	if a, b := old.seal("p", []byte("x")), old.seal("p", []byte("x")); a == b {
		t.Error("sealing is deterministic: nonce reuse")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(v)
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x80
		if _, err := old.open("session|a", base64.RawURLEncoding.EncodeToString(bad)); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	for _, junk := range []string{"", "!!!", "AA", base64.RawURLEncoding.EncodeToString(raw[:20])} {
		if _, err := old.open("session|a", junk); err == nil {
			t.Errorf("junk %q opened", junk)
		}
	}
}

func TestCookieChunks(t *testing.T) {
	big := strings.Repeat("x", 3*maxChunk+10)
	jar := cookieJar{}
	set, ok := jar.writeChunked("__Host-s", big, time.Hour, 4)
	if !ok || len(set) != 4 {
		t.Fatalf("write: ok=%v, %d cookies, want 4 chunks", ok, len(set))
	}
	// What the browser sends back reads as the original value.
	var pairs []string
	for _, c := range set {
		pairs = append(pairs, strings.SplitN(c, ";", 2)[0])
		if len(c) > 4000 {
			t.Errorf("chunk of %d bytes", len(c))
		}
	}
	back := parseCookies(strings.Join(pairs, "; "))
	if v, ok := back.readChunked("__Host-s", 4); !ok || v != big {
		t.Fatalf("read back %d bytes, ok=%v", len(v), ok)
	}
	// Shrinking to one cookie expires the old chunks.
	set, _ = back.writeChunked("__Host-s", "small", time.Hour, 4)
	if len(set) != 5 || !strings.HasPrefix(set[0], "__Host-s=small") {
		t.Fatalf("shrink: %v", set)
	}
	for _, c := range set[1:] {
		if !strings.Contains(c, "Max-Age=0") {
			t.Errorf("old chunk not expired: %s", c)
		}
	}
	if _, ok := jar.writeChunked("__Host-s", strings.Repeat("x", 4*maxChunk+1), time.Hour, 4); ok {
		t.Error("more than max chunks accepted")
	}
	if got := parseCookies(strings.Repeat("a=b; ", maxCookieHeader/5+1)); len(got) != 0 {
		t.Error("oversized Cookie header parsed")
	}
}

func TestTTLCache(t *testing.T) {
	now := time.Unix(0, 0)
	c := newTTLCache[int](2, func() time.Time { return now })
	if !c.add("a", 1, time.Minute) || c.add("a", 2, time.Minute) {
		t.Fatal("add is not test-and-set")
	}
	c.put("b", 2, time.Minute)
	c.put("c", 3, time.Minute)
	if _, ok := c.get("a"); ok {
		t.Error("oldest entry not evicted at the bound")
	}
	now = now.Add(2 * time.Minute)
	if _, ok := c.get("c"); ok {
		t.Error("expired entry returned")
	}
	if !c.add("b", 9, time.Minute) {
		t.Error("expired entry blocks add")
	}
}

func TestBrowserLike(t *testing.T) {
	html := map[string]string{"accept": "text/html,*/*"}
	tests := []struct {
		name   string
		method string
		h      map[string]string
		want   bool
	}{
		{"page load", "GET", html, true},
		{"head", "HEAD", html, true},
		{"post", "POST", html, false},
		{"json", "GET", map[string]string{"accept": "application/json"}, false},
		{"no accept", "GET", map[string]string{}, false},
		{"authorization", "GET", map[string]string{"accept": "text/html", "authorization": "Basic x"}, false},
		{"xhr", "GET", map[string]string{"accept": "text/html", "x-requested-with": "XMLHttpRequest"}, false},
		{"fetch", "GET", map[string]string{"accept": "text/html", "sec-fetch-mode": "cors"}, false},
		{"navigate", "GET", map[string]string{"accept": "text/html", "sec-fetch-mode": "navigate"}, true},
	}
	for _, tt := range tests {
		if got := browserLike(&Request{Method: tt.method, Header: tt.h}); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func validConfig(t testing.TB) Config {
	return Config{CookieKeys: [][]byte{key(t)}, Providers: []ProviderConfig{{
		Name: "corp", Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", ExternalURL: "https://app.example",
	}}}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no providers", func(c *Config) { c.Providers = nil }, "providers"},
		{"no keys", func(c *Config) { c.CookieKeys = nil }, "cookie_keys"},
		{"short key", func(c *Config) { c.CookieKeys = [][]byte{[]byte("short")} }, "cookie_keys[0]"},
		{"http external url", func(c *Config) { c.Providers[0].ExternalURL = "http://app.example" }, "https"},
		{"external url with path", func(c *Config) { c.Providers[0].ExternalURL = "https://app.example/x" }, "bare origin"},
		{"bad name", func(c *Config) { c.Providers[0].Name = "Corp!" }, "name"},
		{"no client id", func(c *Config) { c.Providers[0].ClientID = "" }, "client_id"},
		{"cookie prefix", func(c *Config) { c.CookiePrefix = "gatehouse" }, "__Host-"},
		{"callback path", func(c *Config) { c.CallbackPath = "//x" }, "callback_path"},
		{"same paths", func(c *Config) { c.LogoutPath = DefaultCallbackPath }, "must differ"},
		{"duplicate route", func(c *Config) {
			p := c.Providers[0]
			p.Name = "other"
			c.Providers = append(c.Providers, p)
		}, "already covered"},
		{"secret twice", func(c *Config) { c.Providers[0].ClientSecretFile = "/x" }, "exclusive"},
	}
	for _, tt := range tests {
		c := validConfig(t)
		tt.edit(&c)
		err := c.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestRoute(t *testing.T) {
	c := validConfig(t)
	c.Providers = append(c.Providers, ProviderConfig{Name: "admin", Issuer: "https://idp2.example", ClientID: "c",
		ExternalURL: "https://app.example", PathPrefixes: []string{"/admin"}})
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ host, path, want string }{
		{"app.example", "/", "corp"},
		{"APP.example:443", "/x", "corp"},
		{"app.example", "/admin", "admin"},
		{"app.example", "/admin/x", "admin"},
		{"app.example", "/administrator", "corp"},
		{"app.example:8443", "/", ""},
		{"evil.example", "/", ""},
	}
	for _, tt := range tests {
		got := ""
		if p := f.route(tt.host, tt.path); p != nil {
			got = p.cfg.Name
		}
		if got != tt.want {
			t.Errorf("route(%s, %s) = %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}
}

func TestUpstreamCookie(t *testing.T) {
	f, err := New(validConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ in, want string }{
		{"a=1; __Host-gatehouse-corp=xyz; b=2", "a=1; b=2"},
		{"__Host-gatehouse-corp.0=x;__Host-gatehouse-login-ab=y", ""},
		{"a=1", "a=1"},
	}
	for _, tt := range tests {
		if got, _ := f.UpstreamCookie(tt.in); got != tt.want {
			t.Errorf("UpstreamCookie(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseKey(t *testing.T) {
	k := key(t)
	for _, s := range []string{base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k) + "\n"} {
		if got, err := ParseKey(s); err != nil || !bytes.Equal(got, k) {
			t.Errorf("ParseKey(%q): %v", s, err)
		}
	}
	if _, err := ParseKey(base64.StdEncoding.EncodeToString(k[:16])); err == nil {
		t.Error("16-byte key accepted")
	}
}

// BenchmarkAuthenticate is the per-request cost of a session: parse the
// Cookie header, open the sealed session, check lifetime and revocation.
func BenchmarkAuthenticate(b *testing.B) {
	f, err := New(validConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	p := f.providers[0]
	s := &session{ID: randomToken(), Provider: p.cfg.Name, Issuer: p.cfg.Issuer, Subject: "alice",
		Email: "alice@example.com", Groups: []string{"admins", "devs"}, AuthTime: time.Now().UnixMilli(),
		Expiry: time.Now().Add(time.Hour).UnixMilli(), Refresh: "rt", IDToken: strings.Repeat("x", 900)}
	set, err := f.sessionCookies(cookieJar{}, p, s)
	if err != nil {
		b.Fatal(err)
	}
	req := &Request{Method: "GET", Host: "app.example", Path: "/app", Header: map[string]string{
		"cookie": "other=1; " + strings.SplitN(set[0], ";", 2)[0],
	}}
	b.ReportAllocs()
	for b.Loop() {
		if res := f.Authenticate(context.Background(), req); res.Identity == nil {
			b.Fatal("no identity")
		}
	}
}
