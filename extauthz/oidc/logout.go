package oidc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// logout ends every session of the request's host: the cookies are expired
// and the sessions revoked (a copied cookie stops working too). The browser
// then goes to the IdP's end_session_endpoint with id_token_hint and
// post_logout_redirect_uri when the IdP advertises one, else to
// PostLogoutPath.
//
// Another site must not be able to end the user's sessions (logout CSRF):
// a cross-site GET (a link or redirect elsewhere) gets a page whose button
// posts back from this site, and a cross-site POST is refused.
func (f *Flow) logout(ctx context.Context, r *Request) *Response {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		return errorPage(http.StatusMethodNotAllowed, "Method not allowed.", nil)
	}
	if crossSite(r) {
		if r.Method == http.MethodGet {
			return logoutConfirmPage(f.cfg.LogoutPath)
		}
		f.log.WarnContext(ctx, "oidc logout: cross-site POST refused", "host", r.Host)
		return errorPage(http.StatusForbidden, "Sign out from this site's own page.", nil)
	}
	jar := parseCookies(r.header("cookie"))
	var (
		set    []string
		first  *session
		firstP *provider
	)
	now := f.now()
	for _, p := range f.hostProviders(r.Host) {
		name := f.sessionCookieName(p)
		raw, ok := jar.readChunked(name, f.cfg.MaxCookieChunks)
		if !ok {
			continue
		}
		set = append(set, jar.clearChunked(name, f.cfg.MaxCookieChunks, nil)...)
		s, err := f.openSession(p, raw)
		if err != nil {
			continue
		}
		expires := s.authTime().Add(f.cfg.SessionTTL + f.cfg.ClockSkew)
		if err := f.revoked.Revoke(ctx, "session:"+s.ID, now, expires); err != nil {
			f.log.ErrorContext(ctx, "oidc logout: revocation not stored; the cookie is cleared but a copy would still work",
				"provider", p.cfg.Name, "err", err)
		}
		f.log.InfoContext(ctx, "oidc logout", "provider", p.cfg.Name, "subject", s.Subject)
		if first == nil {
			first, firstP = s, p
		}
	}
	location := f.cfg.PostLogoutPath
	if first != nil {
		if d, err := firstP.discover(ctx); err == nil && d.endSession != "" {
			if u, err := url.Parse(d.endSession); err == nil {
				q := u.Query()
				if first.IDToken != "" {
					q.Set("id_token_hint", first.IDToken)
				}
				q.Set("post_logout_redirect_uri", firstP.cfg.PostLogoutRedirectURL)
				q.Set("client_id", firstP.cfg.ClientID)
				u.RawQuery = q.Encode()
				location = u.String()
			}
		}
	}
	return redirect(location, set)
}

// errLogoutToken marks a logout token that is not acceptable (answered 400).
var errLogoutToken = errors.New("invalid logout token")

// BackChannelLogout verifies an OIDC Back-Channel Logout 1.0 token and
// revokes the sessions it names: by sid when present, else every session of
// the subject, authenticated until now. Besides go-oidc's checks (signature,
// iss, aud, exp, the events claim, no nonce, jti, sub or sid) it demands a
// recent iat and rejects a jti seen before. Errors wrapping errLogoutToken
// are the sender's fault.
func (f *Flow) BackChannelLogout(ctx context.Context, rawToken string) error {
	if rawToken == "" || len(rawToken) > maxTokenBytes {
		return fmt.Errorf("%w: missing or too large", errLogoutToken)
	}
	iss, err := unverifiedIssuer(rawToken)
	if err != nil {
		return fmt.Errorf("%w: %w", errLogoutToken, err)
	}
	var lastErr error = fmt.Errorf("%w: no provider for the issuer", errLogoutToken)
	for _, p := range f.providers {
		if p.cfg.Issuer != iss {
			continue
		}
		d, err := p.discover(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		lt, err := d.verifier.VerifyLogout(ctx, rawToken)
		if err != nil {
			lastErr = fmt.Errorf("%w: %w", errLogoutToken, err)
			continue
		}
		now, skew := f.now(), f.cfg.ClockSkew
		if lt.IssuedAt.IsZero() || lt.IssuedAt.After(now.Add(skew)) || now.Sub(lt.IssuedAt) > maxLogoutTokenAge+skew {
			return fmt.Errorf("%w: iat missing, in the future or too old", errLogoutToken)
		}
		first, err := f.firstUse(ctx, f.usedJTIs, "jti", lt.Issuer+"|"+lt.TokenID, maxLogoutTokenAge+2*skew)
		if err != nil {
			// Unknown across replicas, first here: revoke anyway, since
			// refusing a genuine logout would keep the session alive.
			f.log.WarnContext(ctx, "oidc back-channel logout: jti checked on this replica only", "err", err)
		}
		if !first {
			return fmt.Errorf("%w: jti replayed", errLogoutToken)
		}
		key := "sub:" + lt.Issuer + "|" + lt.Subject
		if lt.SessionID != "" {
			key = "sid:" + lt.Issuer + "|" + lt.SessionID
		}
		if err := f.revoked.Revoke(ctx, key, now, now.Add(f.cfg.SessionTTL+skew)); err != nil {
			return fmt.Errorf("store revocation: %w", err)
		}
		f.log.InfoContext(ctx, "oidc back-channel logout", "provider", p.cfg.Name,
			"subject", lt.Subject, "by_sid", lt.SessionID != "")
		return nil
	}
	return lastErr
}

// unverifiedIssuer reads iss from a JWT without verifying it, only to pick
// the provider whose keys will verify it.
func unverifiedIssuer(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWS compact token")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("payload is not base64url")
	}
	var c struct {
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Issuer == "" {
		return "", errors.New("no iss claim")
	}
	return c.Issuer, nil
}

// maxLogoutBody bounds the back-channel request body.
const maxLogoutBody = 64 << 10

// BackChannelLogoutHandler serves the back-channel logout endpoint the IdP
// calls directly (mount it on an HTTP listener the IdP can reach): POST,
// application/x-www-form-urlencoded, logout_token=… Answers 200 on
// success, 400 for an unacceptable token and 503 when the revocation could
// not be stored (the IdP may retry).
func (f *Flow) BackChannelLogoutHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxLogoutBody)
		if err := r.ParseForm(); err != nil {
			writeLogoutError(w, http.StatusBadRequest)
			return
		}
		status := f.backChannelStatus(r.Context(), r.PostForm.Get("logout_token"))
		if status != http.StatusOK {
			writeLogoutError(w, status)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

func (f *Flow) backChannelStatus(ctx context.Context, token string) int {
	err := f.BackChannelLogout(ctx, token)
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, errLogoutToken):
		f.log.InfoContext(ctx, "oidc back-channel logout rejected", "err", err)
		return http.StatusBadRequest
	default:
		f.log.ErrorContext(ctx, "oidc back-channel logout failed", "err", err)
		return http.StatusServiceUnavailable
	}
}

func writeLogoutError(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	code := "invalid_request"
	if status >= 500 {
		code = "temporarily_unavailable"
	}
	_, _ = fmt.Fprintf(w, "{\"error\":%q}\n", code)
}

// backChannelViaCheck accepts the back-channel logout routed through Envoy
// (which must forward the body: with_request_body).
func (f *Flow) backChannelViaCheck(ctx context.Context, r *Request) *Response {
	if r.Method != http.MethodPost {
		return errorPage(http.StatusMethodNotAllowed, "Method not allowed.", nil)
	}
	mt, _, _ := mime.ParseMediaType(r.header("content-type"))
	if mt != "application/x-www-form-urlencoded" || len(r.Body) > maxLogoutBody {
		return errorPage(http.StatusBadRequest, "Bad request.", nil)
	}
	form, err := url.ParseQuery(string(r.Body))
	if err != nil {
		return errorPage(http.StatusBadRequest, "Bad request.", nil)
	}
	status := f.backChannelStatus(ctx, form.Get("logout_token"))
	h := http.Header{}
	h.Set("Cache-Control", "no-store")
	body := ""
	if status != http.StatusOK {
		h.Set("Content-Type", "application/json")
		body = `{"error":"invalid_request"}`
		if status >= 500 {
			body = `{"error":"temporarily_unavailable"}`
		}
	}
	return &Response{Status: status, Header: h, Body: body}
}

// crossSite reports whether the browser says another site started the
// request: Sec-Fetch-Site (every current browser), else an Origin naming
// another host. A request with neither (an old browser, a typed URL) is
// taken as this site's.
func crossSite(r *Request) bool {
	switch r.header("sec-fetch-site") {
	case "cross-site", "same-site":
		// same-site is another origin of the site (a sibling subdomain,
		// perhaps user content): it gets the confirmation page too.
		return true
	case "same-origin", "none":
		return false
	}
	origin := r.header("origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	// Hosts as the rest of the flow compares them: case and a default
	// port (":443" on https) do not make another site.
	return err != nil || u.Host == "" || normalizeHost(u.Host, u.Scheme) != normalizeHost(r.Host, u.Scheme)
}

// logoutConfirmPage asks the user to confirm with a same-site POST. It may
// not be framed, so a page elsewhere cannot trick a click on it. No
// form-action: the POST is redirected to the IdP's end_session_endpoint,
// and browsers apply form-action to that redirect too.
func logoutConfirmPage(logoutPath string) *Response {
	h := http.Header{}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	body := `<!doctype html><meta charset="utf-8"><title>Sign out</title>` +
		`<form method="post" action="` + html.EscapeString(logoutPath) + `"><button type="submit">Sign out</button></form>` + "\n"
	return &Response{Status: http.StatusOK, Header: h, Body: body}
}
