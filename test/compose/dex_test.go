package compose

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse-proxy/gatehouse/test/dex"
)

// TestDexRunsComposeConfig runs the real Dex (the pinned build of
// test/tools/dex, the version of the compose image) on compose/dex/config.yaml
// with only its addresses moved to free loopback ports, and walks what the
// scripts do against it: the password grant of get_token, and the browser
// login of user.sh up to Dex's redirect to the edge's /oauth2/callback.
func TestDexRunsComposeConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Dex; not in -short")
	}
	bin := dex.Binary(t)
	defaults := scriptDefaults(t)

	var doc map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, dexFile)), &doc); err != nil {
		t.Fatal(err)
	}
	webAddr, telemetryAddr := freeLoopback(t), freeLoopback(t)
	issuer := "http://" + webAddr + "/dex"
	doc["issuer"] = issuer
	doc["web"] = map[string]any{"http": webAddr}
	doc["telemetry"] = map[string]any{"http": telemetryAddr}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgPath, out, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dex output:\n%s", logs.String())
		}
	})
	waitReady(t, "http://"+telemetryAddr+"/healthz/ready")

	t.Run("password grant (get_token)", func(t *testing.T) {
		form := url.Values{
			"grant_type": {"password"},
			"username":   {defaults["USER_LOGIN"]},
			"password":   {defaults["USER_PASSWORD"]},
			"scope":      {"openid email profile groups"},
		}
		req, err := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(defaults["CLIENT_ID"], defaults["CLIENT_SECRET"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("token endpoint: %d %s", resp.StatusCode, body)
		}
		var tok struct {
			IDToken string `json:"id_token"`
		}
		if err := json.Unmarshal(body, &tok); err != nil || tok.IDToken == "" {
			t.Fatalf("no id_token: %v %s", err, body)
		}
		parts := strings.Split(tok.IDToken, ".")
		if len(parts) != 3 {
			t.Fatalf("id_token is not a compact JWS")
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var claims struct {
			Iss    string   `json:"iss"`
			Aud    any      `json:"aud"`
			Email  string   `json:"email"`
			Groups []string `json:"groups"`
		}
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		if claims.Iss != issuer || claims.Aud != defaults["CLIENT_ID"] || claims.Email != defaults["USER_LOGIN"] || !slices.Contains(claims.Groups, "reader") {
			t.Errorf("claims = %+v, want iss %s, aud %s, groups with reader", claims, issuer, defaults["CLIENT_ID"])
		}
	})

	t.Run("browser login (user.sh)", func(t *testing.T) {
		var dc dexConfig
		strictDecode(t, dexFile, &dc)
		callback := dc.StaticClients[0].RedirectURIs[0]
		jar, err := cookiejar.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		// Follow Dex's own redirects; stop at the first one leaving Dex.
		client := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if req.URL.Host != webAddr {
				return http.ErrUseLastResponse
			}
			return nil
		}}
		auth := issuer + "/auth?" + url.Values{
			"client_id": {defaults["CLIENT_ID"]}, "redirect_uri": {callback}, "response_type": {"code"},
			"scope": {"openid email groups"}, "state": {"s1"},
		}.Encode()
		resp, err := client.Get(auth)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("login page: %d %s", resp.StatusCode, page)
		}
		// The same extraction as user.sh: the form's action, &amp; undone.
		m := regexp.MustCompile(`<form[^>]*action="([^"]*)"`).FindSubmatch(page)
		if m == nil {
			t.Fatalf("no login form at %s:\n%s", resp.Request.URL, page)
		}
		action := strings.ReplaceAll(string(m[1]), "&amp;", "&")
		if !strings.HasPrefix(action, "/") {
			t.Fatalf("form action %q is not an absolute path; user.sh resolves only those and full URLs", action)
		}
		resp, err = client.PostForm("http://"+webAddr+action, url.Values{
			"login": {defaults["USER_LOGIN"]}, "password": {defaults["USER_PASSWORD"]},
		})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, callback+"?") {
			t.Fatalf("after login: %d to %q, want a redirect to %s?code=...", resp.StatusCode, loc, callback)
		}
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		if u.Query().Get("code") == "" || u.Query().Get("state") != "s1" {
			t.Errorf("callback query %q lacks code or state", u.RawQuery)
		}
	})
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func waitReady(t *testing.T, u string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dex not ready at %s: %v", u, last)
}
