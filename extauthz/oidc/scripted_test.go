package oidc_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
)

// scriptedIdP is a minimal OpenID provider for what Dex cannot do: it
// advertises an end_session_endpoint, puts sid in its ID tokens, signs
// back-channel logout tokens, and issues ID tokens with claims a test
// chose to break. Discovery and JWKS are go-oidc's oidctest server; the
// authorization and token endpoints are the few lines below (PKCE checked).
type scriptedIdP struct {
	t        testing.TB
	srv      *httptest.Server
	key      *rsa.PrivateKey
	Issuer   string
	ClientID string

	mu      sync.Mutex
	codes   map[string]authRequest
	n       int
	tamper  func(claims map[string]any)
	lastSID string
	lastIDT string
}

type authRequest struct{ nonce, challenge, sid string }

const scriptedClient = "corp-app"

func newScriptedIdP(t testing.TB) *scriptedIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &scriptedIdP{t: t, key: key, ClientID: scriptedClient, codes: map[string]authRequest{}}
	keys := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: "RS256"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		keys.ServeHTTP(rec, r)
		var doc map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &doc)
		doc["end_session_endpoint"] = p.Issuer + "/logout"
		doc["backchannel_logout_supported"] = true
		doc["backchannel_logout_session_supported"] = true
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
	mux.Handle("GET /keys", keys)
	mux.HandleFunc("GET /auth", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	p.Issuer = p.srv.URL
	keys.SetIssuer(p.Issuer)
	return p
}

func (p *scriptedIdP) provider() oidc.ProviderConfig {
	return oidc.ProviderConfig{Name: "corp", Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: "corp-secret",
		ExternalURL: appURL, Scopes: []string{"openid", "email", "groups", "offline_access"}}
}

// setTamper changes the claims of the ID tokens issued from now on.
func (p *scriptedIdP) setTamper(f func(map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = f
}

func (p *scriptedIdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.ClientID || q.Get("redirect_uri") != callbackURL || q.Get("code_challenge_method") != "S256" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.n++
	code := fmt.Sprintf("code-%d", p.n)
	p.codes[code] = authRequest{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), sid: fmt.Sprintf("sid-%d", p.n)}
	p.mu.Unlock()
	back, _ := url.Parse(q.Get("redirect_uri"))
	back.RawQuery = url.Values{"code": {code}, "state": {q.Get("state")}}.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *scriptedIdP) token(w http.ResponseWriter, r *http.Request) {
	user, pass, _ := r.BasicAuth()
	if user != p.ClientID || pass != "corp-secret" {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ar authRequest
	switch r.PostFormValue("grant_type") {
	case "authorization_code":
		var ok bool
		ar, ok = p.codes[r.PostFormValue("code")]
		delete(p.codes, r.PostFormValue("code"))
		sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != ar.challenge {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
	case "refresh_token":
		ar.sid = strings.TrimPrefix(r.PostFormValue("refresh_token"), "rt-")
	default:
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
		return
	}
	now := time.Now()
	claims := map[string]any{
		"iss": p.Issuer, "sub": "user-1", "aud": p.ClientID, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"email": "carol@corp.example", "groups": []string{"staff"}, "sid": ar.sid,
	}
	if ar.nonce != "" {
		claims["nonce"] = ar.nonce
	}
	if p.tamper != nil {
		p.tamper(claims)
	}
	idt := p.sign(claims)
	p.lastSID, p.lastIDT = ar.sid, idt
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": "at-" + ar.sid, "token_type": "Bearer", "expires_in": 3600,
		"id_token": idt, "refresh_token": "rt-" + ar.sid,
	})
}

func (p *scriptedIdP) sign(claims map[string]any) string {
	b, err := json.Marshal(claims)
	if err != nil {
		p.t.Fatal(err)
	}
	return oidctest.SignIDToken(p.key, "k1", "RS256", string(b))
}

// last returns the sid and ID token of the latest token response.
func (p *scriptedIdP) last() (sid, idToken string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastSID, p.lastIDT
}

// logoutToken is a valid back-channel logout token; edit changes it.
func (p *scriptedIdP) logoutToken(edit func(map[string]any)) string {
	now := time.Now()
	c := map[string]any{
		"iss": p.Issuer, "aud": p.ClientID, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": randomID(), "events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
		"sub": "user-1",
	}
	if edit != nil {
		edit(c)
	}
	return p.sign(c)
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// scriptedLogin logs b in at the scripted IdP and returns the final reply
// of the callback.
func (b *browser) scriptedLogin(path string) reply {
	b.t.Helper()
	r := b.check("GET", path)
	if r.status != http.StatusFound {
		b.t.Fatalf("GET %s: status %d", path, r.status)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(r.location)
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	back, err := resp.Location()
	if err != nil {
		b.t.Fatalf("IdP answered %d without a redirect", resp.StatusCode)
	}
	return b.check("GET", back.RequestURI())
}
