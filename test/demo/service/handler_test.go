package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// inventoryStub records what orders sent to "the sidecar" and answers like
// inventory (or with status when not 200).
type inventoryStub struct {
	mu     sync.Mutex
	got    []*http.Request
	status int
	body   string
}

func (s *inventoryStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.got = append(s.got, r.Clone(context.Background()))
	s.mu.Unlock()
	if s.status != 0 && s.status != http.StatusOK {
		http.Error(w, s.body, s.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, s.body)
}

func TestHandlers(t *testing.T) {
	type call struct {
		method, path string
		headers      map[string]string
	}
	tests := []struct {
		name       string
		service    string
		stub       *inventoryStub // orders only; nil means inventory unreachable
		call       call
		wantStatus int
		check      func(t *testing.T, body []byte, stub *inventoryStub)
	}{
		{
			name: "healthz", service: serviceInventory,
			call: call{method: "GET", path: "/healthz"}, wantStatus: 200,
			check: func(t *testing.T, body []byte, _ *inventoryStub) {
				var got map[string]string
				mustJSON(t, body, &got)
				if got["status"] != "ok" || got["service"] != "inventory" {
					t.Errorf("healthz = %v", got)
				}
			},
		},
		{
			name: "root echoes identity headers, never credentials", service: serviceOrders,
			call: call{method: "GET", path: "/", headers: map[string]string{
				"X-Gatehouse-Subject":     "alice",
				"X-Gatehouse-Roles":       "reader",
				"X-Gatehouse-Groups":      "staff",
				"X-Gatehouse-Kind":        "user",
				"X-Gatehouse-Spiffe-Id":   "spiffe://gatehouse.local/edge/edge",
				"X-Gatehouse-Verified-By": "session",
				"X-Gatehouse-Decision-Id": "d-1",
				"X-Forwarded-Client-Cert": "URI=spiffe://gatehouse.local/edge/edge",
				"X-Gatehouse-Assertion":   "secret-assertion",
				"Authorization":           "Bearer secret-token",
				"Cookie":                  "session=secret-cookie",
			}},
			wantStatus: 200,
			check: func(t *testing.T, body []byte, _ *inventoryStub) {
				var got echo
				mustJSON(t, body, &got)
				want := map[string]string{
					"x-gatehouse-subject":     "alice",
					"x-gatehouse-roles":       "reader",
					"x-gatehouse-groups":      "staff",
					"x-gatehouse-kind":        "user",
					"x-gatehouse-spiffe-id":   "spiffe://gatehouse.local/edge/edge",
					"x-gatehouse-verified-by": "session",
					"x-gatehouse-decision-id": "d-1",
					"x-forwarded-client-cert": "URI=spiffe://gatehouse.local/edge/edge",
				}
				for k, v := range want {
					if got.Headers[k] != v {
						t.Errorf("header %s = %q, want %q", k, got.Headers[k], v)
					}
				}
				if !got.Assertion || got.Service != "orders" || got.Method != "GET" || got.Path != "/" {
					t.Errorf("echo = %+v", got)
				}
				for _, secret := range []string{"secret-assertion", "secret-token", "secret-cookie"} {
					if strings.Contains(string(body), secret) {
						t.Errorf("answer leaks %q: %s", secret, body)
					}
				}
			},
		},
		{
			name: "inventory item", service: serviceInventory,
			call: call{method: "GET", path: "/api/inventory/42", headers: map[string]string{
				"X-Gatehouse-Spiffe-Id": "spiffe://gatehouse.local/sidecar/orders",
			}},
			wantStatus: 200,
			check: func(t *testing.T, body []byte, _ *inventoryStub) {
				var got inventoryAnswer
				mustJSON(t, body, &got)
				if got.Item != "42" || got.Echo.Service != "inventory" || got.Echo.Headers["x-gatehouse-spiffe-id"] != "spiffe://gatehouse.local/sidecar/orders" {
					t.Errorf("answer = %+v", got)
				}
			},
		},
		{
			name: "inventory does not serve orders", service: serviceInventory,
			call: call{method: "GET", path: "/api/orders/1"}, wantStatus: 200,
			check: func(t *testing.T, body []byte, _ *inventoryStub) {
				var got map[string]any
				mustJSON(t, body, &got)
				if _, ok := got["order"]; ok {
					t.Errorf("inventory answered an order: %s", body)
				}
			},
		},
		{
			name: "orders fans out with the assertion only", service: serviceOrders,
			stub: &inventoryStub{body: `{"item":"7","stock":3}`},
			call: call{method: "GET", path: "/api/orders/7", headers: map[string]string{
				"X-Gatehouse-Assertion": "signed-by-edge",
				"Authorization":         "Bearer user-token",
				"Cookie":                "session=abc",
			}},
			wantStatus: 200,
			check: func(t *testing.T, body []byte, stub *inventoryStub) {
				var got ordersAnswer
				mustJSON(t, body, &got)
				var inv struct{ Stock int }
				mustJSON(t, got.Inventory.Body, &inv)
				if got.Order != "7" || got.Inventory.Status != 200 || inv.Stock != 3 {
					t.Errorf("answer = %s", body)
				}
				if len(stub.got) != 1 {
					t.Fatalf("inventory called %d times", len(stub.got))
				}
				r := stub.got[0]
				if r.URL.Path != "/api/inventory/7" || r.Method != "GET" {
					t.Errorf("inventory call = %s %s", r.Method, r.URL.Path)
				}
				if r.Header.Get("X-Gatehouse-Assertion") != "signed-by-edge" {
					t.Errorf("assertion not forwarded: %v", r.Header)
				}
				if r.Header.Get("Authorization") != "" || r.Header.Get("Cookie") != "" {
					t.Errorf("credentials forwarded to inventory: %v", r.Header)
				}
			},
		},
		{
			name: "orders without assertion sends none", service: serviceOrders,
			stub: &inventoryStub{body: `{}`},
			call: call{method: "GET", path: "/api/orders/a%2Fb"}, wantStatus: 200,
			check: func(t *testing.T, _ []byte, stub *inventoryStub) {
				r := stub.got[0]
				if _, ok := r.Header["X-Gatehouse-Assertion"]; ok {
					t.Errorf("empty assertion header sent")
				}
				if r.URL.EscapedPath() != "/api/inventory/a%2Fb" {
					t.Errorf("id not escaped: %s", r.URL.EscapedPath())
				}
			},
		},
		{
			name: "inventory denial is a 502 showing the denial", service: serviceOrders,
			stub: &inventoryStub{status: http.StatusForbidden, body: "RBAC: access denied"},
			call: call{method: "GET", path: "/api/orders/1"}, wantStatus: http.StatusBadGateway,
			check: func(t *testing.T, body []byte, _ *inventoryStub) {
				var got ordersAnswer
				mustJSON(t, body, &got)
				if got.Inventory.Status != 403 || !strings.Contains(string(got.Inventory.Body), "access denied") {
					t.Errorf("answer = %s", body)
				}
			},
		},
		{
			name: "inventory unreachable is a 502 with the error", service: serviceOrders,
			call: call{method: "GET", path: "/api/orders/1"}, wantStatus: http.StatusBadGateway,
			check: func(t *testing.T, body []byte, _ *inventoryStub) {
				var got ordersAnswer
				mustJSON(t, body, &got)
				if got.Inventory.Error == "" {
					t.Errorf("no error reported: %s", body)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config{Name: tt.service, Client: &http.Client{Timeout: 2 * time.Second}}
			if tt.service == serviceOrders {
				if tt.stub != nil {
					inv := httptest.NewServer(tt.stub)
					t.Cleanup(inv.Close)
					c.InventoryURL = inv.URL
				} else {
					dead := httptest.NewServer(http.NotFoundHandler())
					dead.Close()
					c.InventoryURL = dead.URL
				}
			}
			h, err := newHandler(c)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(tt.call.method, tt.call.path, nil)
			for k, v := range tt.call.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			tt.check(t, rec.Body.Bytes(), tt.stub)
		})
	}
}

func TestNewHandlerRejects(t *testing.T) {
	tests := []struct {
		name string
		c    config
		want string
	}{
		{name: "unknown service", c: config{Name: "payments"}, want: "must be"},
		{name: "orders without inventory", c: config{Name: serviceOrders}, want: "inventory URL"},
		{name: "orders with a bad inventory URL", c: config{Name: serviceOrders, InventoryURL: "127.0.0.1:15001"}, want: "inventory URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := newHandler(tt.c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    options
		wantErr string
	}{
		{name: "flag", args: []string{"-name", "inventory"}, want: options{name: "inventory", listen: "127.0.0.1:8080", inventory: "http://127.0.0.1:15001"}},
		{name: "env", env: map[string]string{"DEMO_NAME": "orders", "DEMO_LISTEN": ":9", "DEMO_INVENTORY_URL": "http://x:1"}, want: options{name: "orders", listen: ":9", inventory: "http://x:1"}},
		{name: "flag beats env", args: []string{"-name=orders"}, env: map[string]string{"DEMO_NAME": "inventory"}, want: options{name: "orders", listen: "127.0.0.1:8080", inventory: "http://127.0.0.1:15001"}},
		{name: "missing name", wantErr: "must be"},
		{name: "bad flag", args: []string{"-nope"}, wantErr: "flags"},
		{name: "stray argument", args: []string{"-name", "orders", "extra"}, wantErr: "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOptions(tt.args, env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("options = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestRun starts the real server on a loopback port and stops it.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	env := func(string) string { return "" }
	go func() { done <- run(ctx, []string{"-name", "inventory", "-listen", "127.0.0.1:0"}, env, nil, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz status %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
}

func mustJSON(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("not JSON (%v): %s", err, body)
	}
}
