package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

type sourceConfig struct {
	clock Clock
	log   *slog.Logger
}

// SourceOption configures LoadPair and DirSource.
type SourceOption func(*sourceConfig)

// WithSourceClock replaces the wall clock used for validity checks (for tests).
func WithSourceClock(c Clock) SourceOption { return func(s *sourceConfig) { s.clock = c } }

// WithSourceLogger sets DirSource's logger (default slog.Default()).
func WithSourceLogger(l *slog.Logger) SourceOption { return func(s *sourceConfig) { s.log = l } }

func newSourceConfig(opts []SourceOption) *sourceConfig {
	c := &sourceConfig{clock: SystemClock{}, log: slog.Default()}
	for _, o := range opts {
		o(c)
	}
	return c
}

// LoadPair reads an operator-provided certificate chain and private key and
// checks them before they can be served: both files are strict PEM (a
// half-written file is an error naming it), the certificate file holds the
// leaf first and then any intermediates, the key matches the leaf, the leaf
// is valid now, and the chain verifies up to roots. roots must not be nil:
// trust is never implied.
func LoadPair(certFile, keyFile string, roots *x509.CertPool, opts ...SourceOption) (*Leaf, error) {
	cfg := newSourceConfig(opts)
	if roots == nil {
		return nil, fmt.Errorf("%s: no trusted roots to verify against", certFile)
	}
	chainPEM, err := readBounded(certFile)
	if err != nil {
		return nil, err
	}
	chain, err := parseCertsPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	keyPEM, err := readBounded(keyFile)
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	leaf := chain[0]
	if !keyMatches(key, leaf) {
		return nil, fmt.Errorf("%s: private key does not match the certificate in %s", keyFile, certFile)
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("%s: first certificate is a CA, want the leaf first", certFile)
	}
	now := cfg.clock.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s: certificate expired at %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%s: certificate not valid until %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("%s: chain does not verify against the trusted CAs: %w", certFile, err)
	}
	var spiffeID string
	for _, u := range leaf.URIs {
		if u.Scheme == "spiffe" {
			spiffeID = u.String()
			break
		}
	}
	// Re-encode rather than pass the file through: no stray headers or text.
	var chainBuf bytes.Buffer
	for _, c := range chain {
		pem.Encode(&chainBuf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	normKey, err := marshalKeyPEM(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	return &Leaf{
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		KeyPEM:   normKey,
		ChainPEM: chainBuf.Bytes(),
		Cert:     leaf,
		Serial:   serialHex(leaf),
		NotAfter: leaf.NotAfter,
		SPIFFEID: spiffeID,
	}, nil
}

// maxDirPairs bounds how many pairs one DirSource holds.
const maxDirPairs = 1000

// DirSource serves operator-provided certificates from a directory.
//
// Layout: each pair is <name>.crt (PEM: the leaf, then any intermediates)
// and <name>.key (PEM private key: PKCS#8, SEC 1 or PKCS#1, unencrypted).
// <name> is [A-Za-z0-9][A-Za-z0-9._-]*. Kubernetes TLS secrets mounted as a
// volume therefore appear as the pair "tls" (tls.crt, tls.key). Hidden
// entries (starting with "."), directories and other files are ignored.
//
// Reload re-reads the directory. A pair whose new files are bad (half
// written, mismatched, expired, not rooted in the trusted CAs, one file
// missing) keeps serving its last good leaf; a pair whose files are both
// gone is dropped, and so is a leaf when it expires (Run): an expired
// certificate is never served, whoever's it is. The file watcher calls
// Reload; DirSource has none.
type DirSource struct {
	dir      string
	roots    *x509.CertPool
	cfg      *sourceConfig
	reloadMu sync.Mutex // one Reload at a time
	mu       sync.Mutex
	leaves   map[string]*Leaf
	errs     map[string]error
	subs     map[int]func(name string, leaf *Leaf)
	nextSub  int
	wake     chan struct{} // Run re-plans after a Reload
}

// NewDirSource returns a DirSource for dir verifying against roots. Call
// Reload to read it.
func NewDirSource(dir string, roots *x509.CertPool, opts ...SourceOption) *DirSource {
	return &DirSource{
		dir:    dir,
		roots:  roots,
		cfg:    newSourceConfig(opts),
		leaves: map[string]*Leaf{},
		errs:   map[string]error{},
		subs:   map[int]func(string, *Leaf){},
		wake:   make(chan struct{}, 1),
	}
}

// Run drops each leaf when it expires, until ctx ends, telling OnChange
// subscribers as for a removed pair (leaf nil) so whoever served it falls
// back (Gatehouse issues its own). It returns nil when ctx ends.
func (d *DirSource) Run(ctx context.Context) error {
	for {
		d.dropExpired()
		next, ok := d.nextExpiry()
		if !sleepUntil(ctx, d.cfg.clock, next, ok, d.wake) {
			return nil
		}
	}
}

func (d *DirSource) nextExpiry() (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var next time.Time
	for _, l := range d.leaves {
		if next.IsZero() || l.NotAfter.Before(next) {
			next = l.NotAfter
		}
	}
	return next, !next.IsZero()
}

// dropExpired removes the leaves whose NotAfter has passed and tells the
// subscribers.
func (d *DirSource) dropExpired() {
	now := d.cfg.clock.Now()
	d.mu.Lock()
	var gone []string
	for name, l := range d.leaves {
		if !now.Before(l.NotAfter) {
			delete(d.leaves, name)
			gone = append(gone, name)
		}
	}
	subs := d.subscribersLocked()
	d.mu.Unlock()
	slices.Sort(gone)
	for _, name := range gone {
		d.cfg.log.Error("operator certificate expired and is no longer served; replace its files", "name", name, "dir", d.dir)
		for _, fn := range subs {
			fn(name, nil)
		}
	}
}

func (d *DirSource) subscribersLocked() []func(string, *Leaf) {
	keys := slices.Sorted(maps.Keys(d.subs))
	subs := make([]func(string, *Leaf), 0, len(keys))
	for _, k := range keys {
		subs = append(subs, d.subs[k])
	}
	return subs
}

// Dir is the directory being served.
func (d *DirSource) Dir() string { return d.dir }

// Get returns the current good leaf for name.
func (d *DirSource) Get(name string) (*Leaf, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.leaves[name]
	return l, ok
}

// Names lists the pairs with a good leaf, sorted.
func (d *DirSource) Names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.leaves))
}

// Err returns why the last Reload could not take name's files, or nil.
func (d *DirSource) Err(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errs[name]
}

// OnChange registers fn, called after a Reload for each pair whose leaf
// changed, with leaf nil when the pair was removed. The returned func
// unsubscribes.
func (d *DirSource) OnChange(fn func(name string, leaf *Leaf)) (cancel func()) {
	d.mu.Lock()
	id := d.nextSub
	d.nextSub++
	d.subs[id] = fn
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		delete(d.subs, id)
		d.mu.Unlock()
	}
}

// Reload re-reads the directory. It returns the problems found, one per
// bad pair and naming its files; good pairs are taken either way.
func (d *DirSource) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()

	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("certificate directory %s: %w (keeping %d loaded pairs)", d.dir, err, len(d.Names()))
	}
	type files struct{ crt, key bool }
	found := map[string]*files{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		ext := filepath.Ext(name)
		if ext != ".crt" && ext != ".key" {
			continue
		}
		stem := strings.TrimSuffix(name, ext)
		if !validPairName(stem) {
			continue
		}
		f := found[stem]
		if f == nil {
			f = &files{}
			found[stem] = f
		}
		if ext == ".crt" {
			f.crt = true
		} else {
			f.key = true
		}
	}

	var errs []error
	type change struct {
		name string
		leaf *Leaf
	}
	var changes []change
	names := slices.Sorted(maps.Keys(found))
	if len(names) > maxDirPairs {
		errs = append(errs, fmt.Errorf("certificate directory %s: %d pairs, only the first %d are loaded", d.dir, len(names), maxDirPairs))
		names = names[:maxDirPairs]
	}
	results := map[string]*Leaf{}
	problems := map[string]error{}
	for _, name := range names {
		f := found[name]
		crt, key := filepath.Join(d.dir, name+".crt"), filepath.Join(d.dir, name+".key")
		var leaf *Leaf
		var err error
		switch {
		case !f.crt:
			err = fmt.Errorf("%s: missing (its key %s exists)", crt, key)
		case !f.key:
			err = fmt.Errorf("%s: missing (its certificate %s exists)", key, crt)
		default:
			leaf, err = LoadPair(crt, key, d.roots, WithSourceClock(d.cfg.clock))
		}
		if err != nil {
			problems[name] = err
			errs = append(errs, err)
			continue
		}
		results[name] = leaf
	}

	d.mu.Lock()
	for name, leaf := range results {
		if old, ok := d.leaves[name]; !ok || !bytes.Equal(old.Cert.Raw, leaf.Cert.Raw) || !bytes.Equal(old.KeyPEM, leaf.KeyPEM) {
			changes = append(changes, change{name, leaf})
		}
		d.leaves[name] = leaf
	}
	for name := range d.leaves {
		if _, present := found[name]; !present {
			delete(d.leaves, name)
			changes = append(changes, change{name, nil})
		}
	}
	d.errs = problems
	subs := d.subscribersLocked()
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}

	for name, err := range problems {
		if _, kept := d.Get(name); kept {
			d.cfg.log.Warn("certificate pair rejected; keeping the last good one", "name", name, "err", err)
		} else {
			d.cfg.log.Warn("certificate pair rejected", "name", name, "err", err)
		}
	}
	slices.SortFunc(changes, func(a, b change) int { return strings.Compare(a.name, b.name) })
	for _, c := range changes {
		if c.leaf != nil {
			d.cfg.log.Info("certificate pair loaded", "name", c.name, "leaf", c.leaf)
		} else {
			d.cfg.log.Info("certificate pair removed", "name", c.name)
		}
		for _, fn := range subs {
			fn(c.name, c.leaf)
		}
	}
	return errors.Join(errs...)
}

func validPairName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && (c == '.' || c == '-' || c == '_'))
		if !ok {
			return false
		}
	}
	return true
}
