package jwt

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// JWKS fetching bounds. Refresh intervals come from the response's
// Cache-Control max-age, clamped to [jwksMinRefresh, jwksMaxRefresh].
const (
	jwksDefaultRefresh  = 15 * time.Minute
	jwksMinRefresh      = time.Minute
	jwksMaxRefresh      = time.Hour
	jwksRefetchInterval = 10 * time.Second // unknown-kid refetches, per issuer
	jwksFetchTimeout    = 10 * time.Second
	jwksMaxBodyBytes    = 1 << 20
	jwksMaxKeys         = 100
	maxRedirects        = 3
	wellKnownOIDC       = "/.well-known/openid-configuration"
)

// jwkEntry is one verification key from a JWKS. A key that is present but
// must not be used (use "enc", key_ops without "verify", weak) is kept with
// err set, so a token naming it fails with a precise reason and does not
// trigger a pointless refetch.
type jwkEntry struct {
	kid string
	alg string // the JWK's own alg, "" when unset
	key crypto.PublicKey
	err error
}

// usableFor checks the JWK-level constraints for one token's alg.
func (e *jwkEntry) usableFor(alg string) error {
	if e.err != nil {
		return e.err
	}
	if e.alg != "" && e.alg != alg {
		return fail(ReasonKeyMismatch, "JWK %q is for alg %q, token uses %q", e.kid, e.alg, alg)
	}
	return nil
}

// keySet is an immutable snapshot of one issuer's JWKS.
type keySet struct {
	byKID     map[string]*jwkEntry
	ambiguous map[string]bool
}

func (ks *keySet) lookup(kid string) (*jwkEntry, error) {
	if ks.ambiguous[kid] {
		return nil, fail(ReasonAmbiguousKID, "JWKS lists the kid more than once")
	}
	if e, ok := ks.byKID[kid]; ok {
		return e, nil
	}
	return nil, fail(ReasonUnknownKID, "")
}

// parseJWKS turns a JWKS document into a snapshot. Each key is parsed on its
// own with jwk.ParseKey so one unsupported key does not discard the others.
// Symmetric keys are dropped; keys without kid are dropped (tokens must name
// their key); private key material in a public JWKS marks the key unusable.
// A document without a single usable key is an error, so the caller keeps the
// last good set.
func parseJWKS(data []byte, logger *slog.Logger) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not JSON: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWKS has no "keys" array`)
	}
	if len(doc.Keys) > jwksMaxKeys {
		return nil, fmt.Errorf("JWKS has %d keys, limit %d", len(doc.Keys), jwksMaxKeys)
	}
	ks := &keySet{byKID: make(map[string]*jwkEntry), ambiguous: make(map[string]bool)}
	usable := 0
	for i, raw := range doc.Keys {
		e, err := parseJWK(raw)
		if err != nil {
			logger.Warn("ignoring JWKS key", "index", i, "error", err)
			continue
		}
		if e == nil {
			continue
		}
		if _, dup := ks.byKID[e.kid]; dup || ks.ambiguous[e.kid] {
			logger.Warn("JWKS lists a kid more than once; the kid is unusable", "kid", e.kid)
			delete(ks.byKID, e.kid)
			ks.ambiguous[e.kid] = true
			continue
		}
		ks.byKID[e.kid] = e
	}
	for _, e := range ks.byKID {
		if e.err == nil {
			usable++
		}
	}
	if usable == 0 {
		return nil, errors.New("JWKS has no usable signature key")
	}
	return ks, nil
}

// parseJWK returns (nil, nil) for keys that are silently skipped. A key that
// jwx cannot parse (or refuses, e.g. RSA under 2048 bits) but that names a kid
// is kept as an unusable entry, so tokens naming it fail with invalid_key
// rather than triggering refetches.
func parseJWK(raw []byte) (*jwkEntry, error) {
	key, err := jwk.ParseKey(raw)
	if err != nil {
		var probe struct {
			Kid string `json:"kid"`
		}
		if json.Unmarshal(raw, &probe) == nil && probe.Kid != "" {
			return &jwkEntry{kid: probe.Kid, err: fail(ReasonInvalidKey, "JWK %q: %w", probe.Kid, err)}, nil
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	if key.KeyType().String() == "oct" {
		return nil, nil // symmetric keys are never used
	}
	kid, ok := key.KeyID()
	if !ok || kid == "" {
		return nil, errors.New("key has no kid")
	}
	e := &jwkEntry{kid: kid}
	if a, ok := key.Algorithm(); ok {
		e.alg = a.String()
	}
	if priv, err := jwk.IsPrivateKey(key); err != nil || priv {
		e.err = fail(ReasonKeyMismatch, "JWK %q carries private key material; refusing to use it", kid)
		return e, nil
	}
	if use, ok := key.KeyUsage(); ok && use != "sig" {
		e.err = fail(ReasonKeyMismatch, "JWK %q has use %q, not sig", kid, use)
		return e, nil
	}
	if ops, ok := key.KeyOps(); ok {
		verify := false
		for _, op := range ops {
			if op == jwk.KeyOpVerify {
				verify = true
			}
		}
		if !verify {
			e.err = fail(ReasonKeyMismatch, "JWK %q key_ops lacks verify", kid)
			return e, nil
		}
	}
	var pub any
	if err := jwk.Export(key, &pub); err != nil {
		return nil, fmt.Errorf("export key %q: %w", kid, err)
	}
	if err := validatePublicKey(pub); err != nil {
		e.err = err
		return e, nil
	}
	e.key = pub
	return e, nil
}

// jwksSource keeps one issuer's JWKS fresh: a background refresh honouring
// Cache-Control, plus rate-limited refetches when a token names an unknown
// kid. A failed fetch never replaces the last good set.
type jwksSource struct {
	issuer       string
	discoveryURL string // "" when JWKSURI was configured directly
	client       *http.Client
	logger       *slog.Logger
	now          func() time.Time
	baseCtx      context.Context // cancelled by Verifier.Close
	observe      func(issuer string, err error)

	keys atomic.Pointer[keySet]

	mu          sync.Mutex
	jwksURI     string        // configured or last discovered
	lastAttempt time.Time     // start of the last fetch, for the unknown-kid rate limit
	inflight    chan struct{} // closed when the running fetch ends; nil when idle
	stopped     bool          // set by stop: no new fetches
	lastErr     error
	nextRefresh time.Duration
	failures    int
}

func newJWKSSource(ctx context.Context, ic *IssuerConfig, client *http.Client, logger *slog.Logger, now func() time.Time) *jwksSource {
	s := &jwksSource{
		issuer:  ic.Issuer,
		client:  client,
		logger:  logger.With("issuer", ic.Issuer),
		now:     now,
		baseCtx: ctx,
		jwksURI: ic.JWKSURI,
	}
	if ic.JWKSURI == "" {
		s.discoveryURL = discoveryDocURL(ic.DiscoveryURL)
	}
	return s
}

// discoveryDocURL accepts either the issuer URL or the full discovery URL.
func discoveryDocURL(u string) string {
	if strings.HasSuffix(u, wellKnownOIDC) {
		return u
	}
	return strings.TrimSuffix(u, "/") + wellKnownOIDC
}

// key returns the JWKS entry for kid. An unknown kid triggers at most one
// refetch per jwksRefetchInterval per issuer; callers arriving while a fetch
// runs wait for it instead of starting another.
func (s *jwksSource) key(ctx context.Context, kid string) (*jwkEntry, error) {
	ks := s.keys.Load()
	if ks != nil {
		e, err := ks.lookup(kid)
		if ReasonOf(err) != ReasonUnknownKID {
			return e, err
		}
	}
	if done, ok := s.startFetch(false); ok {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, failWrap(ReasonContextCanceled, ctx.Err())
		}
	}
	// Load again even when no fetch was started: one may have finished
	// since ks was loaded, and is why none is started now.
	ks = s.keys.Load()
	if ks == nil {
		s.mu.Lock()
		err := s.lastErr
		s.mu.Unlock()
		return nil, failWrap(ReasonKeyUnavailable, err)
	}
	return ks.lookup(kid)
}

// startFetch starts a fetch unless one is running (then it returns that one)
// or, when !force, one started less than jwksRefetchInterval ago (then ok is
// false).
func (s *jwksSource) startFetch(force bool) (done <-chan struct{}, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight != nil {
		return s.inflight, true
	}
	now := s.now()
	if !force && !s.lastAttempt.IsZero() && now.Sub(s.lastAttempt) < jwksRefetchInterval {
		return nil, false
	}
	if s.stopped || s.baseCtx.Err() != nil {
		return nil, false
	}
	s.lastAttempt = now
	ch := make(chan struct{})
	s.inflight = ch
	go s.fetch(ch)
	return ch, true
}

// stop prevents new fetches and waits for a running one (whose context the
// Verifier has already cancelled).
func (s *jwksSource) stop() {
	s.mu.Lock()
	s.stopped = true
	ch := s.inflight
	s.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (s *jwksSource) fetch(done chan struct{}) {
	ctx, cancel := context.WithTimeout(s.baseCtx, jwksFetchTimeout)
	defer cancel()
	ks, refresh, err := s.fetchOnce(ctx)
	if s.observe != nil {
		s.observe(s.issuer, err)
	}

	s.mu.Lock()
	defer func() {
		s.inflight = nil
		close(done)
		s.mu.Unlock()
	}()
	if err != nil {
		s.lastErr = err
		s.failures++
		kept := s.keys.Load() != nil
		s.logger.Warn("JWKS fetch failed", "error", err, "keeping_last_good", kept)
		return
	}
	s.keys.Store(ks)
	s.lastErr = nil
	s.failures = 0
	s.nextRefresh = refresh
	s.logger.Debug("JWKS refreshed", "keys", len(ks.byKID), "next_refresh", refresh)
}

// fetchOnce resolves jwks_uri (via discovery when configured, falling back to
// the last discovered URI if discovery fails) and fetches and parses the set.
func (s *jwksSource) fetchOnce(ctx context.Context) (*keySet, time.Duration, error) {
	s.mu.Lock()
	uri := s.jwksURI
	s.mu.Unlock()
	if s.discoveryURL != "" {
		discovered, err := s.discover(ctx)
		switch {
		case err == nil:
			uri = discovered
			s.mu.Lock()
			s.jwksURI = discovered
			s.mu.Unlock()
		case uri == "":
			return nil, 0, err
		default:
			s.logger.Warn("OIDC discovery failed, using last known jwks_uri", "error", err)
		}
	}
	body, hdr, err := s.get(ctx, uri)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks_uri %s: %w", uri, err)
	}
	ks, err := parseJWKS(body, s.logger)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks_uri %s: %w", uri, err)
	}
	return ks, refreshInterval(hdr.Get("Cache-Control")), nil
}

func (s *jwksSource) discover(ctx context.Context) (string, error) {
	body, _, err := s.get(ctx, s.discoveryURL)
	if err != nil {
		return "", fmt.Errorf("discovery %s: %w", s.discoveryURL, err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery %s: not JSON: %w", s.discoveryURL, err)
	}
	// OpenID Connect Discovery 1.0 §4.3: the document must name the issuer
	// it was fetched for, or an attacker-controlled document could redirect
	// key lookups.
	if doc.Issuer != s.issuer {
		return "", fmt.Errorf("discovery %s: issuer %q does not match configured issuer", s.discoveryURL, doc.Issuer)
	}
	if err := checkFetchURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery %s: jwks_uri: %w", s.discoveryURL, err)
	}
	return doc.JWKSURI, nil
}

func (s *jwksSource) get(ctx context.Context, u string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, jwksMaxBodyBytes))
		return nil, nil, fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBodyBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if len(body) > jwksMaxBodyBytes {
		return nil, nil, fmt.Errorf("response larger than %d bytes", jwksMaxBodyBytes)
	}
	return body, resp.Header, nil
}

// run refreshes the set until ctx ends, waiting nextWait between fetches.
func (s *jwksSource) run(ctx context.Context) {
	for {
		t := time.NewTimer(s.nextWait())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if done, ok := s.startFetch(true); ok {
			select {
			case <-done:
			case <-ctx.Done():
				return
			}
		}
	}
}

// nextWait is the Cache-Control interval after a success, and a short
// doubling backoff (10 s, 20 s, 40 s, then 1 min) while fetches fail or no
// set has ever been fetched.
func (s *jwksSource) nextWait() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures > 0 || s.keys.Load() == nil {
		return min(jwksRefetchInterval<<min(max(s.failures-1, 0), 3), jwksMinRefresh)
	}
	if s.nextRefresh <= 0 {
		return jwksDefaultRefresh
	}
	return s.nextRefresh
}

// refreshInterval derives the next refresh from Cache-Control: max-age
// clamped to [1 min, 1 h]; no-store/no-cache mean the minimum; absent means
// the 15 min default.
func refreshInterval(cacheControl string) time.Duration {
	d := jwksDefaultRefresh
	for _, directive := range strings.Split(cacheControl, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return jwksMinRefresh
		case "max-age":
			if secs, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64); err == nil && secs >= 0 {
				if secs > int64(jwksMaxRefresh/time.Second) {
					secs = int64(jwksMaxRefresh / time.Second)
				}
				d = time.Duration(secs) * time.Second
			}
		}
	}
	return min(max(d, jwksMinRefresh), jwksMaxRefresh)
}

// checkFetchURL allows https anywhere and plain http only to loopback hosts
// (local development and tests): keys fetched over plain http from elsewhere
// could be swapped by anyone on the path.
func checkFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL: %w", err)
	}
	if u.Host == "" {
		return fmt.Errorf("URL %q has no host", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("URL %q must use https (plain http is allowed only for loopback hosts)", raw)
	default:
		return fmt.Errorf("URL %q must use https", raw)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// safeClient returns a shallow copy of c whose redirects obey checkFetchURL,
// so an https endpoint cannot bounce the fetch to plain http.
func safeClient(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return checkFetchURL(req.URL.String())
	}
	return &cc
}
