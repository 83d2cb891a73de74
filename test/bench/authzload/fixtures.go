package authzload

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Request is a CheckRequest shaped as Envoy's ext_authz filter sends it for
// method and path with ~1 KB of browser-like headers, plus extra headers.
func Request(method, path string, extra map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority":               "shop.example.com",
		":method":                  method,
		":path":                    path,
		":scheme":                  "https",
		"accept":                   "application/json, text/plain, */*",
		"accept-encoding":          "gzip, deflate, br",
		"accept-language":          "en-US,en;q=0.9,de;q=0.8",
		"cookie":                   "theme=dark; _ga=GA1.2.1234567890.1700000000; consent=necessary%2Canalytics; cart=7f3b2c1d",
		"referer":                  "https://shop.example.com/orders",
		"sec-ch-ua":                `"Chromium";v="156", "Not-A.Brand";v="24"`,
		"sec-fetch-mode":           "cors",
		"user-agent":               "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
		"x-forwarded-for":          "203.0.113.7",
		"x-forwarded-proto":        "https",
		"x-envoy-external-address": "203.0.113.7",
		"x-request-id":             "0f6d2a3e-7c41-4b8e-9a55-3d2f1e0c9b77",
		"traceparent":              "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"x-tenant":                 "acme",
	}
	for k, v := range extra {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.10", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8443}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "14870339489264412344", Method: method, Path: path, Host: "shop.example.com", Scheme: "https",
			Protocol: "HTTP/2", Headers: h,
		}},
	}}
}

// Issuer is an RS256 token issuer serving its JWKS over HTTP on loopback.
type Issuer struct {
	key    *rsa.PrivateKey
	kid    string
	url    string
	server *http.Server
}

// NewIssuer starts an issuer; Close stops it.
func NewIssuer() (*Issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	is := &Issuer{key: key, kid: "bench-1", url: "http://" + lis.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(is.JWKS()))
	})
	is.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = is.server.Serve(lis) }()
	return is, nil
}

// Close stops the JWKS server.
func (is *Issuer) Close() error { return is.server.Close() }

// URL is the issuer (iss) URL.
func (is *Issuer) URL() string { return is.url }

// JWKSURI is where the key set is served.
func (is *Issuer) JWKSURI() string { return is.url + "/jwks" }

// JWKS is the key set document.
func (is *Issuer) JWKS() string {
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "RSA", "kid": is.kid, "use": "sig", "alg": "RS256",
		"n": b64(is.key.N.Bytes()), "e": b64(big.NewInt(int64(is.key.E)).Bytes()),
	}}})
	return string(b)
}

// Token signs a token for subject with roles, audience "gatehouse", valid
// for an hour; jti makes otherwise equal tokens distinct.
func (is *Issuer) Token(subject, jti string, roles ...string) (string, error) {
	now := time.Now()
	claims := map[string]any{
		"iss": is.url, "sub": subject, "aud": "gatehouse", "email": subject + "@example.com",
		"iat": now.Unix(), "nbf": now.Unix() - 5, "exp": now.Add(time.Hour).Unix(), "roles": roles,
		"groups": []string{"staff", "eu-west"}, "name": "Bench User " + subject,
	}
	if jti != "" {
		claims["jti"] = jti
	}
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": is.kid, "typ": "JWT"})
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64(h) + "." + b64(c)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, is.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return input + "." + b64(sig), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
