// Package scriptedidp is a minimal OpenID provider for tests of what Dex
// cannot do: it advertises an end_session_endpoint and back-channel logout,
// puts sid in its ID tokens, signs back-channel logout tokens, and issues ID
// tokens with claims a test chose to break. Discovery and JWKS are
// go-oidc's oidctest server; the authorization endpoint answers at once
// (no login page) and the token endpoint checks PKCE.
package scriptedidp

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
)

// IdP is a running scripted provider.
type IdP struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// Subject is the sub of every token it issues.
	Subject string

	t        testing.TB
	key      *rsa.PrivateKey
	callback string

	mu      sync.Mutex
	codes   map[string]authRequest
	n       int
	tamper  func(claims map[string]any)
	lastSID string
	lastIDT string
}

type authRequest struct{ nonce, challenge, sid string }

// New starts an IdP for one confidential client whose only redirect URI
// is callbackURL; it stops when the test ends.
func New(t testing.TB, callbackURL, clientID, clientSecret string) *IdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &IdP{t: t, key: key, ClientID: clientID, ClientSecret: clientSecret, Subject: "user-1",
		callback: callbackURL, codes: map[string]authRequest{}}
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
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p.Issuer = srv.URL
	keys.SetIssuer(p.Issuer)
	return p
}

// SetTamper changes the claims of the ID tokens issued from now on.
func (p *IdP) SetTamper(f func(map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = f
}

// Last returns the sid and ID token of the latest token response.
func (p *IdP) Last() (sid, idToken string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastSID, p.lastIDT
}

func (p *IdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.ClientID || q.Get("redirect_uri") != p.callback || q.Get("code_challenge_method") != "S256" {
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

func (p *IdP) token(w http.ResponseWriter, r *http.Request) {
	user, pass, _ := r.BasicAuth()
	if user != p.ClientID || pass != p.ClientSecret {
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
		"iss": p.Issuer, "sub": p.Subject, "aud": p.ClientID, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"email": "carol@corp.example", "groups": []string{"staff"}, "sid": ar.sid,
	}
	if ar.nonce != "" {
		claims["nonce"] = ar.nonce
	}
	if p.tamper != nil {
		p.tamper(claims)
	}
	idt := p.Sign(claims)
	p.lastSID, p.lastIDT = ar.sid, idt
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": "at-" + ar.sid, "token_type": "Bearer", "expires_in": 3600,
		"id_token": idt, "refresh_token": "rt-" + ar.sid,
	})
}

// Sign signs claims with the IdP's key (RS256, kid k1).
func (p *IdP) Sign(claims map[string]any) string {
	b, err := json.Marshal(claims)
	if err != nil {
		p.t.Fatal(err)
	}
	return oidctest.SignIDToken(p.key, "k1", "RS256", string(b))
}

// LogoutToken is a valid back-channel logout token for the IdP's subject;
// edit changes its claims.
func (p *IdP) LogoutToken(edit func(map[string]any)) string {
	now := time.Now()
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	c := map[string]any{
		"iss": p.Issuer, "aud": p.ClientID, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(jti), "sub": p.Subject,
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}
	if edit != nil {
		edit(c)
	}
	return p.Sign(c)
}
