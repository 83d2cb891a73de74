// Package scriptedidp is a minimal OpenID provider for tests of what Dex
// cannot do: it advertises an end_session_endpoint and back-channel logout,
// puts sid in its ID tokens, signs back-channel logout tokens, and issues ID
// tokens with claims a test chose to break. Discovery and JWKS are
// go-oidc's oidctest server; the authorization endpoint answers at once
// (no login page) and the token endpoint checks PKCE.
//
// With NewWith it is also a permissive provider that records every
// authorization and token request it sees, so that a relying-party test
// can judge what was sent where (see Options.RedirectURI).
package scriptedidp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
)

// Options describe a provider for NewWith.
type Options struct {
	ClientID, ClientSecret string
	// RedirectURI, when set, makes the IdP strict: an authorization request
	// must name ClientID, exactly this redirect_uri and an S256 challenge,
	// and a token request must authenticate the client with HTTP Basic and
	// answer the challenge. When empty, the IdP takes any redirect_uri and
	// any (or no) client authentication, and checks PKCE only where the
	// authorization request sent a challenge: the test judges what it
	// recorded (AuthRequests, TokenRequests).
	RedirectURI string
	// Name, when set, is the kid of the signing key and the prefix of the
	// codes, so that the keys and codes of two IdPs differ (default: kid
	// "k1", no prefix).
	Name string
	// Subject is the sub of every token ("user-1" if empty).
	Subject string
	// Claims are further claims of every ID token (the values are shared by
	// all tokens: a tamper function replaces them, never edits them).
	Claims map[string]any
	// Sessions: ID tokens carry a sid, token responses a refresh token
	// (and the refresh_token grant works), and discovery advertises an
	// end_session_endpoint and back-channel logout.
	Sessions bool
	// Discovery is further discovery metadata.
	Discovery map[string]any
}

// IdP is a running scripted provider.
type IdP struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// Subject is the sub of every token it issues.
	Subject string

	t    testing.TB
	key  *rsa.PrivateKey
	kid  string
	opts Options

	mu        sync.Mutex
	codes     map[string]authRequest
	n         int
	authReqs  []url.Values
	tokenReqs []url.Values
	tamper    func(claims map[string]any)
	idToken   func(claims map[string]any) string
	respond   func(back url.Values)
	lastSID   string
	lastIDT   string
}

type authRequest struct{ nonce, challenge, sid string }

// New starts an IdP for one confidential client whose only redirect URI
// is callbackURL, with sessions (sid, refresh tokens, logout); it stops
// when the test ends.
func New(t testing.TB, callbackURL, clientID, clientSecret string) *IdP {
	t.Helper()
	return NewWith(t, Options{ClientID: clientID, ClientSecret: clientSecret, RedirectURI: callbackURL, Sessions: true,
		Claims: map[string]any{"email": "carol@corp.example", "groups": []string{"staff"}}})
}

// NewWith starts an IdP as o describes; it stops when the test ends.
func NewWith(t testing.TB, o Options) *IdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if o.Subject == "" {
		o.Subject = "user-1"
	}
	p := &IdP{t: t, key: key, kid: "k1", opts: o, ClientID: o.ClientID, ClientSecret: o.ClientSecret, Subject: o.Subject,
		codes: map[string]authRequest{}}
	if o.Name != "" {
		p.kid = o.Name
	}
	keys := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: p.kid, Algorithm: "RS256"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		keys.ServeHTTP(rec, r)
		var doc map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &doc)
		if o.Sessions {
			doc["end_session_endpoint"] = p.Issuer + "/logout"
			doc["backchannel_logout_supported"] = true
			doc["backchannel_logout_session_supported"] = true
		}
		maps.Copy(doc, o.Discovery)
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

// SetIDToken replaces the ID tokens issued from now on with what f makes
// of their claims (nil: the IdP signs them).
func (p *IdP) SetIDToken(f func(claims map[string]any) string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idToken = f
}

// SetAuthResponse changes the parameters of the authorization responses
// (code, state) sent from now on.
func (p *IdP) SetAuthResponse(f func(back url.Values)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.respond = f
}

// Last returns the sid and ID token of the latest token response.
func (p *IdP) Last() (sid, idToken string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastSID, p.lastIDT
}

// AuthRequests returns the query of every authorization request so far.
func (p *IdP) AuthRequests() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]url.Values(nil), p.authReqs...)
}

// TokenRequests returns the form of every token request so far, with the
// HTTP Basic user (if any) as basic_client_id.
func (p *IdP) TokenRequests() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]url.Values(nil), p.tokenReqs...)
}

func (p *IdP) strict() bool { return p.opts.RedirectURI != "" }

func (p *IdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	p.authReqs = append(p.authReqs, q)
	p.mu.Unlock()
	if p.strict() && (q.Get("client_id") != p.ClientID || q.Get("redirect_uri") != p.opts.RedirectURI || q.Get("code_challenge_method") != "S256") {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || q.Get("redirect_uri") == "" {
		http.Error(w, "no redirect_uri", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.n++
	code := fmt.Sprintf("code-%d", p.n)
	if p.opts.Name != "" {
		code = p.opts.Name + "-" + code
	}
	p.codes[code] = authRequest{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), sid: fmt.Sprintf("sid-%d", p.n)}
	respond := p.respond
	p.mu.Unlock()
	v := url.Values{"code": {code}, "state": {q.Get("state")}}
	if respond != nil {
		respond(v)
	}
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *IdP) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	form := maps.Clone(r.PostForm)
	if form == nil {
		form = url.Values{}
	}
	user, pass, basic := r.BasicAuth()
	if basic {
		form.Set("basic_client_id", user)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tokenReqs = append(p.tokenReqs, form)
	if p.strict() && (user != p.ClientID || pass != p.ClientSecret) {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	var ar authRequest
	switch grant := form.Get("grant_type"); {
	case grant == "authorization_code":
		var ok bool
		ar, ok = p.codes[form.Get("code")]
		delete(p.codes, form.Get("code"))
		sum := sha256.Sum256([]byte(form.Get("code_verifier")))
		if !ok || ((p.strict() || ar.challenge != "") && base64.RawURLEncoding.EncodeToString(sum[:]) != ar.challenge) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
	case grant == "refresh_token" && p.opts.Sessions:
		ar.sid = strings.TrimPrefix(form.Get("refresh_token"), "rt-")
	default:
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
		return
	}
	now := time.Now()
	claims := map[string]any{
		"iss": p.Issuer, "sub": p.Subject, "aud": p.ClientID, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	maps.Copy(claims, p.opts.Claims)
	if p.opts.Sessions {
		claims["sid"] = ar.sid
	}
	if ar.nonce != "" {
		claims["nonce"] = ar.nonce
	}
	if p.tamper != nil {
		p.tamper(claims)
	}
	idt := p.Sign(claims)
	if p.idToken != nil {
		idt = p.idToken(claims)
	}
	p.lastSID, p.lastIDT = ar.sid, idt
	resp := map[string]any{"access_token": "at-" + ar.sid, "token_type": "Bearer", "expires_in": 3600, "id_token": idt}
	if p.opts.Sessions {
		resp["refresh_token"] = "rt-" + ar.sid
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// Sign signs claims with the IdP's key (RS256, kid k1 or Options.Name).
func (p *IdP) Sign(claims map[string]any) string {
	b, err := json.Marshal(claims)
	if err != nil {
		p.t.Fatal(err)
	}
	return oidctest.SignIDToken(p.key, p.kid, "RS256", string(b))
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
