package oidc

import "testing"

// crossSite compares the Origin's host with r.Host as the rest of the flow
// does (normalizeHost: an authority "app.example.com:443" is the origin
// https://app.example.com). A same-origin POST from a browser that sends
// Origin but not Sec-Fetch-Site (Safari before 16.4, many non-browser
// clients) must not be refused when :authority carries the default port or
// differs in case.
func TestLogoutCrossSiteDefaultPort(t *testing.T) {
	for _, host := range []string{"app.example.com:443", "App.Example.com:443"} {
		r := &Request{Method: "POST", Host: host, Path: DefaultLogoutPath, Header: map[string]string{"origin": "https://app.example.com"}}
		if crossSite(r) {
			t.Errorf("Host %q with Origin https://app.example.com taken as cross-site", host)
		}
	}
}
