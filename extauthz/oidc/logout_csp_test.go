package oidc_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
)

// The cross-site logout confirmation page's button POSTs to the logout path,
// which answers 302 to the IdP's end_session_endpoint, another origin. CSP
// form-action is enforced on every URL of the form's navigation, redirects
// included (Chrome blocks such a redirect), so the page's CSP must allow
// that target, or the user gets a CSP error and stays signed in at the IdP
// (the page once carried form-action 'self').
func TestLogoutConfirmFormReachesEndSession(t *testing.T) {
	idp := newScriptedIdP(t)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	b := e.browser()
	b.scriptedLogin("/app/")

	page := b.check("GET", oidc.DefaultLogoutPath, [2]string{"sec-fetch-site", "cross-site"})
	csp := page.headers["content-security-policy"]
	if page.status != http.StatusOK || !strings.Contains(page.body, "<form") {
		t.Fatalf("cross-site GET: status %d, CSP %q; want the confirmation page", page.status, csp)
	}
	var sources []string
	restricted := false // no form-action directive: any target is allowed
	for _, d := range strings.Split(csp, ";") {
		f := strings.Fields(d)
		if len(f) > 0 && f[0] == "form-action" {
			sources, restricted = f[1:], true
		}
	}
	r := b.check("POST", oidc.DefaultLogoutPath, [2]string{"sec-fetch-site", "same-origin"}, [2]string{"origin", appURL})
	if r.status != http.StatusFound {
		t.Fatalf("confirmed POST: status %d", r.status)
	}
	target, err := url.Parse(r.location)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := url.Parse(appURL)
	allowed := !restricted
	for _, s := range sources {
		switch {
		case s == "'self'":
			allowed = allowed || (target.Scheme == self.Scheme && target.Host == self.Host)
		case s == "*" || strings.HasPrefix(target.String(), strings.TrimSuffix(s, "/")):
			allowed = true
		}
	}
	if !allowed {
		t.Fatalf("the confirmation form's POST is redirected to %s://%s, which its CSP %q does not allow", target.Scheme, target.Host, csp)
	}
}
