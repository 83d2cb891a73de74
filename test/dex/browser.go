package dex

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
)

// Browser is a cookie-keeping HTTP client that walks Dex's login pages the
// way a browser does. It follows redirects only while they stay on Dex, so
// the redirect back to the relying party's callback is handed to the caller
// instead of being fetched.
type Browser struct {
	issuer *url.URL
	client *http.Client
}

// NewBrowser returns a Browser for this Dex with an empty cookie jar.
func (s *Server) NewBrowser() *Browser {
	iss, err := url.Parse(s.Issuer)
	if err != nil {
		s.t.Fatalf("dex: %v", err)
	}
	jar, _ := cookiejar.New(nil)
	b := &Browser{issuer: iss}
	b.client = &http.Client{
		Jar: jar,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != iss.Host || len(via) > 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	return b
}

// ErrInvalidCredentials is returned by Login when Dex shows its login form
// again with an error.
var ErrInvalidCredentials = errors.New("dex rejected the credentials")

// formAction finds the login form's target in Dex's password.html.
var formAction = regexp.MustCompile(`<form method="post" action="([^"]*)"`)

// Login opens authURL (the relying party's redirect to Dex), submits the
// login form with username (Dex's "login" field, the e-mail) and password,
// and returns the URL Dex finally redirects the browser to: the relying
// party's redirect URI with code and state, or with an error.
func (b *Browser) Login(ctx context.Context, authURL, login, password string) (*url.URL, error) {
	resp, body, err := b.do(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, err
	}
	if loc := offSite(resp, b.issuer); loc != nil {
		return loc, nil // Dex answered at once (an error redirect)
	}
	m := formAction.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		return nil, fmt.Errorf("dex login page: status %d, no login form", resp.StatusCode)
	}
	action, err := resp.Request.URL.Parse(html.UnescapeString(m[1]))
	if err != nil {
		return nil, fmt.Errorf("dex login form action: %w", err)
	}
	form := url.Values{"login": {login}, "password": {password}}
	resp, body, err = b.do(ctx, http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	if loc := offSite(resp, b.issuer); loc != nil {
		return loc, nil
	}
	if strings.Contains(body, `id="login-error"`) {
		return nil, ErrInvalidCredentials
	}
	return nil, fmt.Errorf("dex after login: status %d at %s, no redirect to the client", resp.StatusCode, resp.Request.URL.Path)
}

func (b *Browser) do(ctx context.Context, method, target string, body io.Reader) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "text/html")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, "", err
	}
	return resp, string(data), nil
}

// offSite returns the redirect target when resp is a redirect away from Dex.
func offSite(resp *http.Response, issuer *url.URL) *url.URL {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil
	}
	loc, err := resp.Location()
	if err != nil || loc.Host == issuer.Host {
		return nil
	}
	return loc
}
