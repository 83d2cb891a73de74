package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside a CA directory.
const (
	CACertFile  = "ca.crt"
	CAKeyFile   = "ca.key"
	PreviousDir = "previous"
)

// Defaults.
const (
	DefaultTrustDomain = "gatehouse.local"
	DefaultCAValidity  = 5 * 365 * 24 * time.Hour
	// ClockSkew is how far NotBefore is backdated, so a peer whose clock is
	// a little behind does not reject a certificate issued a moment ago.
	ClockSkew = time.Minute
)

// ErrCAExists is returned by Init when the directory already holds a CA and
// WithForce was not given.
var ErrCAExists = errors.New("a CA already exists")

// CA is a loaded certificate authority: the current signing certificate and
// key plus the rotated-out CAs that are still trusted. It is immutable and
// safe for concurrent use; Rotate returns a new CA.
type CA struct {
	dir         string
	trustDomain string
	cert        *x509.Certificate
	certPEM     []byte
	key         crypto.Signer
	previous    []PreviousCA
	clock       Clock
	log         *slog.Logger
}

// PreviousCA is a rotated-out CA certificate that stays trusted until
// RetireAt so leaves it signed keep verifying while they are replaced.
type PreviousCA struct {
	Cert     *x509.Certificate
	RetireAt time.Time
}

type caConfig struct {
	trustDomain     string
	alg             KeyAlgorithm
	validity        time.Duration
	force           bool
	nameConstraints bool
	clock           Clock
	log             *slog.Logger
}

// Option configures Init, Load and Rotate. Options that only make sense
// when creating a CA are ignored by Load.
type Option func(*caConfig)

// WithTrustDomain sets the SPIFFE trust domain of a new CA (default
// "gatehouse.local"). Given to Load or Rotate, it asserts the CA's domain.
func WithTrustDomain(td string) Option { return func(c *caConfig) { c.trustDomain = td } }

// WithKeyAlgorithm sets the CA key type (default ECDSA P-256; on Rotate, the
// type of the current key).
func WithKeyAlgorithm(a KeyAlgorithm) Option { return func(c *caConfig) { c.alg = a } }

// WithCAValidity sets how long a new CA certificate is valid (default 5 years).
func WithCAValidity(d time.Duration) Option { return func(c *caConfig) { c.validity = d } }

// WithForce lets Init replace an existing CA. The replaced CA and every
// previous CA stop being trusted at once.
func WithForce() Option { return func(c *caConfig) { c.force = true } }

// WithNameConstraints controls whether a new CA carries a critical name
// constraint limiting URI SANs to its trust domain (default on), so even a
// misused CA key cannot mint identities for another trust domain.
func WithNameConstraints(on bool) Option { return func(c *caConfig) { c.nameConstraints = on } }

// WithClock replaces the wall clock (for tests).
func WithClock(clk Clock) Option { return func(c *caConfig) { c.clock = clk } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *caConfig) { c.log = l } }

func newCAConfig(opts []Option) *caConfig {
	c := &caConfig{validity: DefaultCAValidity, nameConstraints: true, clock: SystemClock{}, log: slog.Default()}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Init creates a new CA in dir (created 0700 if missing) and writes
// ca.crt (0644) and ca.key (0600). It refuses to touch a directory that
// already has a CA unless WithForce is given.
func Init(dir string, opts ...Option) (*CA, error) {
	cfg := newCAConfig(opts)
	if cfg.trustDomain == "" {
		cfg.trustDomain = DefaultTrustDomain
	}
	if err := ValidateTrustDomain(cfg.trustDomain); err != nil {
		return nil, err
	}
	if err := ensurePrivateDir(dir); err != nil {
		return nil, err
	}
	if !cfg.force {
		for _, name := range []string{CACertFile, CAKeyFile} {
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				return nil, fmt.Errorf("%s: %w (use force to replace it)", filepath.Join(dir, name), ErrCAExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	ca, err := newCA(dir, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.force {
		if err := os.RemoveAll(filepath.Join(dir, PreviousDir)); err != nil {
			return nil, fmt.Errorf("remove previous CAs: %w", err)
		}
	}
	if err := ca.writeCurrent(); err != nil {
		return nil, err
	}
	cfg.log.Info("created CA", "dir", dir, "trust_domain", ca.trustDomain,
		"serial", serialHex(ca.cert), "not_after", ca.cert.NotAfter)
	return ca, nil
}

// newCA generates a CA key and self-signed certificate in memory.
func newCA(dir string, cfg *caConfig) (*CA, error) {
	if cfg.validity <= ClockSkew {
		return nil, fmt.Errorf("CA validity %s is too short", cfg.validity)
	}
	key, err := generateKey(cfg.alg)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := cfg.clock.Now()
	tdURI := &url.URL{Scheme: "spiffe", Host: cfg.trustDomain}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"Gatehouse"},
			// Distinct per CA even when rotated within a second, so chain
			// building never confuses the old and new CA by subject name.
			CommonName: fmt.Sprintf("Gatehouse CA %s %s %.8x", cfg.trustDomain, now.UTC().Format("2006-01-02"), serial.Bytes()),
		},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(cfg.validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // leaves only: no intermediates below this CA
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		URIs:                  []*url.URL{tdURI},
	}
	if cfg.nameConstraints {
		tmpl.PermittedURIDomains = []string{cfg.trustDomain}
		tmpl.PermittedDNSDomainsCritical = true // RFC 5280 4.2.1.10: MUST be critical
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return &CA{
		dir:         dir,
		trustDomain: cfg.trustDomain,
		cert:        cert,
		certPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:         key,
		clock:       cfg.clock,
		log:         cfg.log,
	}, nil
}

// writeCurrent writes ca.key then ca.crt, each atomically.
func (ca *CA) writeCurrent() error {
	keyPEM, err := marshalKeyPEM(ca.key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(ca.dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(ca.dir, CACertFile), ca.certPEM, 0o644)
}

// Load reads the CA in dir and the previous CAs that are still trusted. Each
// error names the file at fault and what is wrong with it.
func Load(dir string, opts ...Option) (*CA, error) {
	return load(dir, newCAConfig(opts), false)
}

func load(dir string, cfg *caConfig, allowExpired bool) (*CA, error) {
	now := cfg.clock.Now()
	if err := notWritableByOthers(dir); err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)

	certPEM, err := readBounded(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", certPath, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("load CA: %s: want exactly one certificate, found %d", certPath, len(certs))
	}
	cert := certs[0]
	if err := checkCACert(cert, now, allowExpired); err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", certPath, err)
	}
	td, err := caTrustDomain(cert)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", certPath, err)
	}
	if cfg.trustDomain != "" && cfg.trustDomain != td {
		return nil, fmt.Errorf("load CA: %s: trust domain is %q, configured %q", certPath, td, cfg.trustDomain)
	}

	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load CA: %s: mode %04o is open to group or others; want 0600 (chmod 600 %s)", keyPath, perm, keyPath)
	}
	keyPEM, err := readBounded(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", keyPath, err)
	}
	if !keyMatches(key, cert) {
		return nil, fmt.Errorf("load CA: %s: private key does not match the public key of %s", keyPath, certPath)
	}

	prev, err := loadPrevious(filepath.Join(dir, PreviousDir), now)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	return &CA{
		dir: dir, trustDomain: td, cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		key: key, previous: prev, clock: cfg.clock, log: cfg.log,
	}, nil
}

func checkCACert(cert *x509.Certificate, now time.Time, allowExpired bool) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("certificate is not a CA (basic constraints CA:TRUE missing)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("CA certificate lacks the keyCertSign key usage")
	}
	if !allowExpired && now.After(cert.NotAfter) {
		return fmt.Errorf("CA certificate expired at %s (rotate it: gatehouse ca rotate)", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("CA certificate not valid until %s (check the system clock)", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// caTrustDomain reads the trust domain from the CA's spiffe://<td> URI SAN.
func caTrustDomain(cert *x509.Certificate) (string, error) {
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		td, path, err := ParseSPIFFEID(u.String())
		if err != nil {
			return "", fmt.Errorf("CA URI SAN: %w", err)
		}
		if path != "" {
			return "", fmt.Errorf("CA URI SAN %q is a workload ID, want spiffe://<trust-domain>", u)
		}
		return td, nil
	}
	return "", errors.New("CA certificate has no spiffe://<trust-domain> URI SAN")
}

// loadPrevious reads previous/<serial>.crt with its .retire time and keeps
// those not yet retired, newest retirement first. A .crt without a readable
// .retire is an error: the operator's intent for it is unknown.
func loadPrevious(dir string, now time.Time) ([]PreviousCA, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := notWritableByOthers(dir); err != nil {
		return nil, err
	}
	var out []PreviousCA
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || filepath.Ext(name) != ".crt" {
			continue
		}
		base := strings.TrimSuffix(name, ".crt")
		retirePath := filepath.Join(dir, base+".retire")
		retireAt, err := readRetire(retirePath)
		if err != nil {
			return nil, err
		}
		if !now.Before(retireAt) {
			continue // retired: no longer trusted
		}
		certPath := filepath.Join(dir, name)
		data, err := readBounded(certPath)
		if err != nil {
			return nil, err
		}
		certs, err := parseCertsPEM(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
		if len(certs) != 1 {
			return nil, fmt.Errorf("%s: want exactly one certificate, found %d", certPath, len(certs))
		}
		if !certs[0].IsCA || !certs[0].BasicConstraintsValid {
			return nil, fmt.Errorf("%s: certificate is not a CA", certPath)
		}
		if !now.Before(certs[0].NotAfter) {
			continue
		}
		out = append(out, PreviousCA{Cert: certs[0], RetireAt: retireAt})
	}
	slices.SortFunc(out, func(a, b PreviousCA) int { return b.RetireAt.Compare(a.RetireAt) })
	return out, nil
}

func readRetire(path string) (time.Time, error) {
	data, err := readBounded(path)
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(data)))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: want an RFC 3339 time: %w", path, err)
	}
	return t, nil
}

// Rotate replaces the CA in dir with a new one of the same trust domain.
// The old certificate moves to previous/<serial>.crt and stays in the trust
// bundle for overlap (but never past its own expiry); its key is discarded
// since only the newest CA signs. Choose overlap at least as long as the
// longest leaf TTL so every old leaf is re-issued before its CA is dropped.
// Previous CAs already retired are deleted. The current CA may be expired.
func Rotate(dir string, overlap time.Duration, opts ...Option) (*CA, error) {
	if overlap < 0 {
		return nil, fmt.Errorf("rotate CA: negative overlap %s", overlap)
	}
	cfg := newCAConfig(opts)
	old, err := load(dir, cfg, true)
	if err != nil {
		return nil, err
	}
	if cfg.alg == "" {
		cfg.alg = keyAlgorithmOf(old.key)
	}
	cfg.trustDomain = old.trustDomain
	if len(old.cert.PermittedURIDomains) == 0 {
		cfg.nameConstraints = false // keep what the operator had
	}
	if err := ensurePrivateDir(dir); err != nil {
		return nil, err
	}
	next, err := newCA(dir, cfg)
	if err != nil {
		return nil, err
	}
	now := cfg.clock.Now()
	// Whole seconds: the .retire file holds RFC 3339 seconds, and the log
	// line below must name the time Load will read back.
	retireAt := now.Add(overlap).Truncate(time.Second)
	if retireAt.After(old.cert.NotAfter) {
		retireAt = old.cert.NotAfter
	}
	prevDir := filepath.Join(dir, PreviousDir)
	if err := ensurePrivateDir(prevDir); err != nil {
		return nil, err
	}
	base := filepath.Join(prevDir, serialHex(old.cert))
	// .retire first: a .crt without one makes Load fail, the reverse is ignored.
	if err := writeFileAtomic(base+".retire", []byte(retireAt.UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(base+".crt", old.certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := next.writeCurrent(); err != nil {
		return nil, err
	}
	if err := prunePrevious(prevDir, now); err != nil {
		cfg.log.Warn("could not prune retired CAs", "dir", prevDir, "err", err)
	}
	next.previous, err = loadPrevious(prevDir, now)
	if err != nil {
		return nil, fmt.Errorf("rotate CA: %w", err)
	}
	cfg.log.Info("rotated CA", "dir", dir, "trust_domain", next.trustDomain,
		"old_serial", serialHex(old.cert), "new_serial", serialHex(next.cert), "old_trusted_until", retireAt)
	return next, nil
}

// prunePrevious deletes previous CAs whose retire time has passed.
func prunePrevious(dir string, now time.Time) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".retire" {
			continue
		}
		p := filepath.Join(dir, e.Name())
		t, err := readRetire(p)
		if err != nil || now.Before(t) {
			continue
		}
		base := strings.TrimSuffix(p, ".retire")
		// Certificate first: a lone .retire is ignored, a lone .crt is not.
		if err := os.Remove(base + ".crt"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TrustDomain is the SPIFFE trust domain this CA issues for.
func (ca *CA) TrustDomain() string { return ca.trustDomain }

// Dir is the directory the CA was loaded from.
func (ca *CA) Dir() string { return ca.dir }

// Certificate is the current CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM is the current CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Previous lists the rotated-out CAs that were still trusted when this CA
// was loaded.
func (ca *CA) Previous() []PreviousCA { return slices.Clone(ca.previous) }

// trusted returns the CA certificates trusted now: the current one first,
// then previous ones whose overlap window has not ended.
func (ca *CA) trusted() []*x509.Certificate {
	now := ca.clock.Now()
	out := []*x509.Certificate{ca.cert}
	for _, p := range ca.previous {
		if now.Before(p.RetireAt) && now.Before(p.Cert.NotAfter) {
			out = append(out, p.Cert)
		}
	}
	return out
}

// TrustBundle returns the PEM of every CA trusted now: the current CA and,
// during their overlap window, previous ones. This is what peers (Envoy's
// validation context) should trust.
func (ca *CA) TrustBundle() []byte {
	var buf bytes.Buffer
	for _, c := range ca.trusted() {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// TrustPool is TrustBundle as a certificate pool, for Go TLS verification.
func (ca *CA) TrustPool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range ca.trusted() {
		pool.AddCert(c)
	}
	return pool
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

// notWritableByOthers refuses a CA directory that group or others can write
// to: whoever can drop a certificate into it (previous/ needs no key) adds
// a trust anchor every proxy is then sent.
func notWritableByOthers(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // reading its files says what is missing
	}
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("directory %s has mode %04o: group or others can add certificates to it (chmod 700 %s)", dir, perm, dir)
	}
	return nil
}
