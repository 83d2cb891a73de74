package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// session is the sealed content of a session cookie: what policy needs,
// and the tokens to refresh and log out with. The browser cannot read it.
type session struct {
	ID       string   `json:"id"` // ours, random; the key of a local logout
	Provider string   `json:"p"`
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Email    string   `json:"em,omitempty"`
	Name     string   `json:"nm,omitempty"`
	Username string   `json:"un,omitempty"`
	Groups   []string `json:"g,omitempty"`
	Roles    []string `json:"r,omitempty"`
	IdPSID   string   `json:"sid,omitempty"` // the IdP's sid claim, for back-channel logout
	AuthTime int64    `json:"at"`            // login, unix ms; refreshes keep it
	Expiry   int64    `json:"exp"`           // ID token expiry, unix ms
	Gen      int      `json:"gen"`           // refresh generation
	Refresh  string   `json:"rt,omitempty"`
	IDToken  string   `json:"idt,omitempty"` // id_token_hint at logout
}

func (s *session) authTime() time.Time { return time.UnixMilli(s.AuthTime) }
func (s *session) expiry() time.Time   { return time.UnixMilli(s.Expiry) }

// newSession verifies the callback's tokens and builds the session.
func (f *Flow) newSession(ctx context.Context, p *provider, d *discovered, tok *oauth2.Token, nonce string) (*session, error) {
	raw, idt, c, err := f.verifyIDToken(ctx, p, d, tok, nonce, f.cfg.LoginTTL)
	if err != nil {
		return nil, err
	}
	s := &session{
		ID: randomToken(), Provider: p.cfg.Name, Issuer: idt.Issuer, Subject: idt.Subject,
		AuthTime: f.now().UnixMilli(), Refresh: tok.RefreshToken, IDToken: raw,
	}
	s.apply(idt.Expiry, c)
	return s, nil
}

func (s *session) apply(expiry time.Time, c *idClaims) {
	s.Expiry = expiry.UnixMilli()
	s.Email, s.Name, s.Username = identity.VerifiedEmail(c.Email, c.EmailVerified), c.Name, c.PreferredUsername
	s.Groups, s.Roles = c.groups, c.roles
	if c.SessionID != "" {
		s.IdPSID = c.SessionID
	}
}

func (f *Flow) sessionCookieName(p *provider) string { return f.cfg.CookiePrefix + "-" + p.cfg.Name }

func sessionPurpose(name string) string { return "session|" + name }

// sessionCookies seals s into Set-Cookie values. A session too large for
// the configured chunks first drops its ID token (only logout's
// id_token_hint needs it); if still too large, the login fails.
func (f *Flow) sessionCookies(jar cookieJar, p *provider, s *session) ([]string, error) {
	name := f.sessionCookieName(p)
	maxAge := s.authTime().Add(f.cfg.SessionTTL).Sub(f.now())
	for _, dropIDToken := range []bool{false, true} {
		c := *s
		if dropIDToken {
			if c.IDToken == "" {
				break
			}
			c.IDToken = ""
		}
		b, err := json.Marshal(&c)
		if err != nil {
			return nil, err
		}
		if set, ok := jar.writeChunked(name, f.seal.seal(sessionPurpose(name), b), maxAge, f.cfg.MaxCookieChunks); ok {
			return set, nil
		}
	}
	return nil, fmt.Errorf("session of %d groups does not fit in %d cookies", len(s.Groups), f.cfg.MaxCookieChunks)
}

func (f *Flow) openSession(p *provider, raw string) (*session, error) {
	name := f.sessionCookieName(p)
	pt, err := f.seal.open(sessionPurpose(name), raw)
	if err != nil {
		return nil, err
	}
	var s session
	if err := json.Unmarshal(pt, &s); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	if s.Provider != p.cfg.Name || s.ID == "" || s.Subject == "" {
		return nil, errors.New("session: not for this provider")
	}
	return &s, nil
}

// Result is what Authenticate found.
type Result struct {
	// Identity of a valid session, nil when there is none.
	Identity *identity.Identity
	// SetCookie values to send with whatever the answer is: a refreshed
	// session, or the expiry of a session that is no longer valid.
	SetCookie []string
}

// Authenticate turns the session cookie of the request's provider into an
// identity, refreshing the tokens first when they are about to expire. Any
// failure — a cookie that does not open, an expired, revoked or
// unrefreshable session — yields no identity, so policy sees an anonymous
// request and a browser is sent to log in again.
func (f *Flow) Authenticate(ctx context.Context, r *Request) Result {
	path, _, _ := strings.Cut(r.Path, "?")
	p := f.route(r.Host, path)
	if p == nil {
		return Result{}
	}
	jar := parseCookies(r.header("cookie"))
	name := f.sessionCookieName(p)
	raw, ok := jar.readChunked(name, f.cfg.MaxCookieChunks)
	drop := jar.clearChunked(name, f.cfg.MaxCookieChunks, nil)
	if !ok {
		// No session, but chunks left behind (the first one gone) would
		// ride along with every request: expire them.
		return Result{SetCookie: drop}
	}
	end := func(reason string, err error) Result {
		attrs := []any{"provider", p.cfg.Name, "reason", reason}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		f.log.DebugContext(ctx, "oidc session not accepted", attrs...)
		return Result{SetCookie: drop}
	}
	s, err := f.openSession(p, raw)
	if err != nil {
		return end("cookie does not open", nil)
	}
	now := f.now()
	if !now.Before(s.authTime().Add(f.cfg.SessionTTL)) {
		return end("session lifetime over", nil)
	}
	revoked, err := f.isRevoked(ctx, s)
	if err != nil {
		// The store is unreachable: no identity, but keep the cookie for
		// when it is back.
		f.log.WarnContext(ctx, "oidc revocation check failed", "provider", p.cfg.Name, "err", err)
		return Result{}
	}
	if revoked {
		return end("revoked", nil)
	}
	var set []string
	if s.Refresh != "" && !now.Before(s.expiry().Add(-f.cfg.RefreshBefore)) {
		ns, err := f.refresh(ctx, p, s)
		switch {
		case err == nil:
			s = ns
			if set, err = f.sessionCookies(jar, p, s); err != nil {
				return end("refreshed session does not fit", err)
			}
		case errors.Is(err, errSessionOver):
			return end("refresh refused", err)
		default:
			// The IdP is unreachable: the current tokens serve until they
			// expire, not a moment longer (checked below).
			f.log.WarnContext(ctx, "oidc refresh failed", "provider", p.cfg.Name, "err", err)
		}
	}
	if !now.Before(s.expiry()) {
		return end("tokens expired", nil)
	}
	return Result{Identity: s.identity(p, f.cfg.SessionTTL), SetCookie: set}
}

// identity is how policy sees a session: a user, like a bearer-token user.
func (s *session) identity(p *provider, ttl time.Duration) *identity.Identity {
	claims := map[string]any{"provider": p.cfg.Name}
	if s.Name != "" {
		claims["name"] = s.Name
	}
	if s.Username != "" {
		claims["preferred_username"] = s.Username
	}
	return &identity.Identity{
		Kind: identity.KindUser, Method: identity.MethodSession,
		Subject: s.Subject, Issuer: s.Issuer, Email: s.Email,
		Groups: slices.Clone(s.Groups), Roles: slices.Clone(s.Roles),
		Expiry: minTime(s.expiry(), s.authTime().Add(ttl)),
		Claims: claims,
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Revocation keys: our session id (local logout), the IdP's session id and
// the subject (back-channel logout).
func revocationKeys(s *session) []string {
	keys := []string{"session:" + s.ID, "sub:" + s.Issuer + "|" + s.Subject}
	if s.IdPSID != "" {
		keys = append(keys, "sid:"+s.Issuer+"|"+s.IdPSID)
	}
	return keys
}

func (f *Flow) isRevoked(ctx context.Context, s *session) (bool, error) {
	for _, k := range revocationKeys(s) {
		revoked, err := f.revoked.Revoked(ctx, k, s.authTime())
		if err != nil || revoked {
			return true, err
		}
	}
	return false, nil
}

// errSessionOver marks a refresh the IdP refused: the session cannot go on.
var errSessionOver = errors.New("session over")

type refreshResult struct {
	s   *session
	err error
}

// refresh renews s's tokens once per session generation: concurrent
// requests share one call to the IdP (singleflight), and requests still
// carrying the old cookie shortly afterwards get the same result.
func (f *Flow) refresh(ctx context.Context, p *provider, s *session) (*session, error) {
	key := s.ID + "/" + strconv.Itoa(s.Gen)
	if r, ok := f.refreshed.get(key); ok {
		return r.s, r.err
	}
	ch := f.flights.DoChan(key, func() (any, error) {
		if r, ok := f.refreshed.get(key); ok {
			return r, nil
		}
		// Not bound to the first caller: its cancellation must not fail
		// the others.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		defer cancel()
		refresh := f.doRefresh
		if f.once != nil {
			refresh = func(ctx context.Context, p *provider, s *session) (*session, error) {
				return f.sharedRefresh(ctx, p, s, key)
			}
		}
		ns, err := refresh(rctx, p, s)
		r := refreshResult{s: ns, err: err}
		ttl := refreshShare
		if err != nil && !errors.Is(err, errSessionOver) {
			ttl = transientRetry
		}
		f.refreshed.put(key, r, ttl)
		return r, nil
	})
	select {
	case res := <-ch:
		r := res.Val.(refreshResult)
		return r.s, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("refresh: %w", ctx.Err())
	}
}

// refreshOutcome is what one replica's refresh tells the others: the new
// session, or that the IdP refused (so nobody asks again with the same
// refresh token). Transient failures are not shared: another replica may
// well reach the IdP.
type refreshOutcome struct {
	Session *session `json:"s,omitempty"`
	Over    string   `json:"over,omitempty"`
}

func refreshPurpose(key string) string { return "oidc-refresh/" + key }

// sharedRefresh runs doRefresh once across the replicas sharing f.once,
// keyed by session and generation. When the shared store cannot be used at
// all (Redis down: fn never ran) this replica refreshes on its own, which
// the in-process singleflight still makes once per replica: a refresh per
// replica beats logging everybody out while Redis is away.
func (f *Flow) sharedRefresh(ctx context.Context, p *provider, s *session, key string) (*session, error) {
	purpose := refreshPurpose(key)
	var ran atomic.Bool
	sealed, err := f.once.Once(ctx, purpose, refreshTimeout, func(ctx context.Context) ([]byte, error) {
		ran.Store(true)
		ns, err := f.doRefresh(ctx, p, s)
		var out refreshOutcome
		switch {
		case err == nil:
			out.Session = ns
		case errors.Is(err, errSessionOver):
			out.Over = err.Error()
		default:
			return nil, err
		}
		pt, err := json.Marshal(&out)
		if err != nil {
			return nil, fmt.Errorf("refresh: %w", err)
		}
		return f.shared.Seal(purpose, pt), nil
	})
	if err != nil {
		if !ran.Load() && ctx.Err() == nil {
			f.log.WarnContext(ctx, "oidc shared refresh unavailable; refreshing on this replica only",
				"provider", p.cfg.Name, "err", err)
			return f.doRefresh(ctx, p, s)
		}
		return nil, err
	}
	pt, err := f.shared.Open(purpose, sealed)
	if err != nil {
		// Another replica with other cookie keys, or a corrupted value:
		// not a verdict on the session.
		return nil, fmt.Errorf("refresh: shared result: %w", err)
	}
	var out refreshOutcome
	if err := json.Unmarshal(pt, &out); err != nil {
		return nil, fmt.Errorf("refresh: shared result: %w", err)
	}
	switch {
	case out.Over != "":
		return nil, fmt.Errorf("%w (on another replica): %s", errSessionOver, truncate(out.Over, 200))
	case out.Session == nil || out.Session.ID != s.ID || out.Session.Gen != s.Gen+1:
		return nil, errors.New("refresh: shared result is not this session's")
	}
	return out.Session, nil
}

func (f *Flow) doRefresh(ctx context.Context, p *provider, s *session) (*session, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := d.oauth.TokenSource(f.oauthContext(ctx), &oauth2.Token{RefreshToken: s.Refresh}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			f.countRefresh(p, "refused")
			return nil, fmt.Errorf("%w: refresh refused: %s", errSessionOver, truncate(re.ErrorCode, 64))
		}
		f.countRefresh(p, "error")
		return nil, fmt.Errorf("refresh: %w", err)
	}
	f.countRefresh(p, "ok")
	ns := *s
	ns.Gen++
	if tok.RefreshToken != "" {
		ns.Refresh = tok.RefreshToken
	}
	if _, ok := tok.Extra("id_token").(string); ok {
		raw, idt, c, err := f.verifyIDToken(ctx, p, d, tok, "", f.cfg.LoginTTL)
		if err != nil {
			return nil, fmt.Errorf("%w: refreshed id_token: %w", errSessionOver, err)
		}
		// OpenID Connect Core 12.2: same issuer and subject.
		if idt.Issuer != s.Issuer || idt.Subject != s.Subject {
			return nil, fmt.Errorf("%w: refreshed id_token is for another user", errSessionOver)
		}
		ns.IDToken = raw
		ns.apply(idt.Expiry, c)
		return &ns, nil
	}
	// No new ID token: the claims stand, for as long as the access token.
	exp := tok.Expiry
	if exp.IsZero() {
		exp = f.now().Add(5 * time.Minute)
	}
	ns.Expiry = exp.UnixMilli()
	return &ns, nil
}

func (f *Flow) countRefresh(p *provider, result string) {
	if f.refreshN != nil {
		f.refreshN.WithLabelValues(p.cfg.Name, result).Inc()
	}
}
