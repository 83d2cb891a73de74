package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// Names of the two services this program can play.
const (
	serviceOrders    = "orders"
	serviceInventory = "inventory"
)

// assertionHeader carries the edge's signed statement of the end user; the
// orders service passes it on to inventory unchanged.
const assertionHeader = "x-gatehouse-assertion"

// echoedHeaders are the identity headers a service echoes back. The
// assertion and Authorization are never echoed: they are credentials.
var echoedHeaders = []string{
	"x-gatehouse-subject",
	"x-gatehouse-issuer",
	"x-gatehouse-email",
	"x-gatehouse-roles",
	"x-gatehouse-groups",
	"x-gatehouse-kind",
	"x-gatehouse-spiffe-id",
	"x-gatehouse-verified-by",
	"x-gatehouse-decision-id",
	"x-forwarded-client-cert",
}

// maxUpstreamBody bounds what orders reads of inventory's answer.
const maxUpstreamBody = 1 << 20

// config is what newHandler needs.
type config struct {
	Name         string       // orders or inventory
	InventoryURL string       // base URL of inventory, orders only
	Client       *http.Client // for calls to inventory
	Logger       *slog.Logger
}

// echo is the part of every answer that says what this service saw.
type echo struct {
	Service string            `json:"service"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	// Assertion says whether x-gatehouse-assertion arrived (never its value).
	Assertion bool `json:"assertion"`
}

// inventoryAnswer is inventory's GET /api/inventory/{id}.
type inventoryAnswer struct {
	Echo  echo   `json:"echo"`
	Item  string `json:"item"`
	Stock int    `json:"stock"`
}

// upstream is orders' report of its call to inventory.
type upstream struct {
	URL    string          `json:"url"`
	Status int             `json:"status,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// ordersAnswer is orders' GET /api/orders/{id}.
type ordersAnswer struct {
	Echo      echo     `json:"echo"`
	Order     string   `json:"order"`
	Inventory upstream `json:"inventory"`
}

func newHandler(c config) (http.Handler, error) {
	if c.Name != serviceOrders && c.Name != serviceInventory {
		return nil, fmt.Errorf("service name must be %q or %q; got %q", serviceOrders, serviceInventory, c.Name)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Client == nil {
		c.Client = http.DefaultClient
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "service": c.Name})
	})
	switch c.Name {
	case serviceInventory:
		mux.HandleFunc("GET /api/inventory/{id}", c.inventory)
	case serviceOrders:
		if c.InventoryURL == "" {
			return nil, fmt.Errorf("orders needs the inventory URL")
		}
		if u, err := url.Parse(c.InventoryURL); err != nil {
			return nil, fmt.Errorf("inventory URL: %w", err)
		} else if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("inventory URL %q: want http(s)://host:port", c.InventoryURL)
		}
		mux.HandleFunc("GET /api/orders/{id}", c.orders)
	}
	// Anything else: say what arrived, so any allowed route is visible.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.echo(r))
	})
	return mux, nil
}

func (c config) echo(r *http.Request) echo {
	e := echo{Service: c.Name, Method: r.Method, Path: r.URL.Path, Headers: map[string]string{}}
	for _, h := range echoedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			e.Headers[h] = strings.Join(v, ",")
		}
	}
	e.Assertion = r.Header.Get(assertionHeader) != ""
	return e
}

func (c config) inventory(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	stock := 0
	for _, b := range []byte(id) {
		stock = (stock*31 + int(b)) % 100
	}
	writeJSON(w, http.StatusOK, inventoryAnswer{Echo: c.echo(r), Item: id, Stock: stock})
}

// orders answers an order together with inventory's answer for the same
// id, fetched through the sidecar. A failed inventory call is a 502 that
// still shows what happened.
func (c config) orders(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ans := ordersAnswer{Echo: c.echo(r), Order: id}
	ans.Inventory = c.callInventory(r, id)
	status := http.StatusOK
	if ans.Inventory.Error != "" || ans.Inventory.Status != http.StatusOK {
		status = http.StatusBadGateway
	}
	writeJSON(w, status, ans)
}

func (c config) callInventory(r *http.Request, id string) upstream {
	u := strings.TrimSuffix(c.InventoryURL, "/") + "/api/inventory/" + url.PathEscape(id)
	up := upstream{URL: u}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
	if err != nil {
		up.Error = err.Error()
		return up
	}
	req.Header.Set("Accept", "application/json")
	// Only the assertion travels on; the caller's bearer token or cookies
	// do not: inventory trusts orders by its SPIFFE id (mTLS), and the user
	// only through the edge's assertion.
	if a := r.Header.Get(assertionHeader); a != "" {
		req.Header.Set(assertionHeader, a)
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		c.Logger.WarnContext(r.Context(), "inventory call failed", "url", u, "error", err)
		up.Error = err.Error()
		return up
	}
	defer resp.Body.Close()
	up.Status = resp.StatusCode
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil {
		up.Error = fmt.Sprintf("reading inventory answer: %v", err)
		return up
	}
	if json.Valid(body) {
		up.Body = body
	} else if len(body) > 0 {
		// Envoy's own denials and errors are plain text; keep them readable.
		quoted, _ := json.Marshal(string(body))
		up.Body = quoted
	}
	return up
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
