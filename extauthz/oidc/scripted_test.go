package oidc_test

import (
	"net/http"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/test/scriptedidp"
)

// scriptedIdP is test/scriptedidp (what Dex cannot do: end_session,
// sid, back-channel logout tokens, broken claims) with this package's
// callback and client.
type scriptedIdP struct{ *scriptedidp.IdP }

const scriptedClient = "corp-app"

func newScriptedIdP(t testing.TB) *scriptedIdP {
	t.Helper()
	return &scriptedIdP{scriptedidp.New(t, callbackURL, scriptedClient, "corp-secret")}
}

func (p *scriptedIdP) provider() oidc.ProviderConfig {
	return oidc.ProviderConfig{Name: "corp", Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.ClientSecret,
		ExternalURL: appURL, Scopes: []string{"openid", "email", "groups", "offline_access"}}
}

func (p *scriptedIdP) setTamper(f func(map[string]any))             { p.SetTamper(f) }
func (p *scriptedIdP) last() (sid, idToken string)                  { return p.Last() }
func (p *scriptedIdP) logoutToken(edit func(map[string]any)) string { return p.LogoutToken(edit) }
func (p *scriptedIdP) sign(claims map[string]any) string            { return p.Sign(claims) }

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
