// Command smoke checks a running Gatehouse the way `make run` starts it:
// it asks the ext_authz server for decisions with Envoy-shaped CheckRequests
// (anonymous, and with a token from the IdP's password grant) and checks
// the admin endpoint, printing PASS/FAIL per check. Exit status 1 if any
// check fails.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	authz := flag.String("authz", "127.0.0.1:9001", "ext_authz gRPC address")
	admin := flag.String("admin", "127.0.0.1:9901", "admin HTTP address")
	issuer := flag.String("issuer", "http://localhost:5556/dex", "OIDC issuer for the password grant (empty: skip token checks)")
	client := flag.String("client", "gatehouse:gatehouse-demo-secret", "client_id:client_secret")
	user := flag.String("user", "alice@example.com:password", "username:password of a user in group reader")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, *authz, *admin, *issuer, *client, *user, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, authzAddr, admin, issuer, client, user string, out io.Writer) error {
	conn, err := grpc.NewClient(authzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ac := authv3.NewAuthorizationClient(conn)
	failed := 0
	check := func(name string, want int, method, path, token string) {
		got, err := decide(ctx, ac, method, path, token)
		switch {
		case err != nil:
			fmt.Fprintf(out, "FAIL %s: %v\n", name, err)
			failed++
		case got != want:
			fmt.Fprintf(out, "FAIL %s: %s %s → %d, want %d\n", name, method, path, got, want)
			failed++
		default:
			fmt.Fprintf(out, "PASS %s: %s %s → %d\n", name, method, path, got)
		}
	}
	if body, err := get(ctx, "http://"+admin+"/readyz"); err != nil || !strings.Contains(body, `"ready":true`) {
		fmt.Fprintf(out, "FAIL admin /readyz: %v %s\n", err, body)
		failed++
	} else {
		fmt.Fprintln(out, "PASS admin /readyz: ready")
	}
	check("public path, anonymous", 200, "GET", "/healthz", "")
	check("protected path, anonymous", 401, "GET", "/api/orders/1", "")
	if issuer != "" {
		token, err := passwordGrant(ctx, issuer, client, user)
		if err != nil {
			fmt.Fprintf(out, "FAIL token from %s: %v\n", issuer, err)
			failed++
		} else {
			check("reader reads an order", 200, "GET", "/api/orders/1", token)
			check("reader may not create one", 403, "POST", "/api/orders", token)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	return nil
}

// decide sends a CheckRequest shaped as Envoy's edge sends it and returns
// the HTTP status Envoy would answer with (200 for allow).
func decide(ctx context.Context, c authv3.AuthorizationClient, method, path, token string) (int, error) {
	h := map[string]string{":authority": "localhost:8443", ":method": method, ":path": path, ":scheme": "https", "user-agent": "gatehouse-smoke"}
	if token != "" {
		h["authorization"] = "Bearer " + token
	}
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "localhost:8443", Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}})
	if err != nil {
		return 0, err
	}
	if resp.GetOkResponse() != nil {
		return 200, nil
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode()), nil
}

// passwordGrant gets an ID token for user from the issuer's token endpoint
// (resource owner password grant, which the demo Dex allows).
func passwordGrant(ctx context.Context, issuer, client, user string) (string, error) {
	var disc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	body, err := get(ctx, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal([]byte(body), &disc); err != nil {
		return "", err
	}
	id, secret, _ := strings.Cut(client, ":")
	name, pass, _ := strings.Cut(user, ":")
	form := url.Values{"grant_type": {"password"}, "username": {name}, "password": {pass}, "scope": {"openid email groups"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, disc.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return "", err
	}
	if tok.IDToken == "" {
		return "", fmt.Errorf("token endpoint: %d %s", resp.StatusCode, tok.Error)
	}
	return tok.IDToken, nil
}

func get(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), err
}
