package certs

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Leaf TTL bounds.
const (
	DefaultLeafTTL = 24 * time.Hour
	// MinLeafTTL keeps the backdating skew a small part of the lifetime.
	MinLeafTTL = 5 * time.Minute
	// MaxLeafTTL caps issued certificates: they are meant to be rotated.
	MaxLeafTTL = 365 * 24 * time.Hour
	// maxDNSNames bounds the SAN list of one leaf.
	maxDNSNames = 100
)

// Leaf is a certificate with its private key, ready to be served. It is
// never mutated after creation; rotation produces a new Leaf.
type Leaf struct {
	// CertPEM is the leaf certificate alone.
	CertPEM []byte
	// KeyPEM is the private key, PKCS#8 PEM. Never log it.
	KeyPEM []byte
	// ChainPEM is the leaf followed by any intermediates: what a TLS
	// endpoint presents (Envoy's certificate_chain). Leaves from a Gatehouse
	// CA have no intermediates, so for them it equals CertPEM.
	ChainPEM []byte
	// Cert is the parsed leaf certificate.
	Cert *x509.Certificate
	// Serial is the serial number in lower-case hex.
	Serial string
	// NotAfter is when the certificate expires.
	NotAfter time.Time
	// SPIFFEID is the certificate's spiffe:// URI SAN, or "" if it has none.
	SPIFFEID string
}

// RenewAt is when this leaf should be replaced; see RenewAt.
func (l *Leaf) RenewAt() time.Time { return RenewAt(l.Cert) }

// TLSCertificate returns the leaf as a crypto/tls certificate.
func (l *Leaf) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(l.ChainPEM, l.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("leaf %s: %w", l.Serial, err)
	}
	return c, nil
}

// LogValue keeps key material out of logs: only identity, serial and expiry.
func (l *Leaf) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("spiffe_id", l.SPIFFEID),
		slog.String("serial", l.Serial),
		slog.Time("not_after", l.NotAfter),
	)
}

// String describes the leaf without key material.
func (l *Leaf) String() string {
	return fmt.Sprintf("leaf{spiffe_id=%s serial=%s not_after=%s}", l.SPIFFEID, l.Serial, l.NotAfter.UTC().Format(time.RFC3339))
}

// RenewAt is NotBefore plus two thirds of the certificate's lifetime: late
// enough not to churn, early enough that a failed renewal can be retried
// many times before the certificate expires.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life / 3 * 2)
}

type issueConfig struct {
	ttl      time.Duration
	dnsNames []string
	alg      KeyAlgorithm
}

// IssueOption configures one issued leaf.
type IssueOption func(*issueConfig)

// WithTTL sets the leaf lifetime (default 24h, between MinLeafTTL and MaxLeafTTL).
func WithTTL(d time.Duration) IssueOption { return func(c *issueConfig) { c.ttl = d } }

// WithDNSNames adds DNS SANs, for peers that check host names.
func WithDNSNames(names ...string) IssueOption {
	return func(c *issueConfig) { c.dnsNames = append(c.dnsNames, names...) }
}

// WithLeafKeyAlgorithm sets the leaf key type (default ECDSA P-256).
func WithLeafKeyAlgorithm(a KeyAlgorithm) IssueOption { return func(c *issueConfig) { c.alg = a } }

// Satisfies reports whether the leaf's certificate carries what opts ask of
// it besides its key and lifetime: the same DNS SANs, in any order. A held
// leaf stops satisfying its identity's options when a config edit changes
// them, and must then be re-issued rather than served until its renewal.
func (l *Leaf) Satisfies(opts ...IssueOption) bool {
	var cfg issueConfig
	for _, o := range opts {
		o(&cfg)
	}
	var have []string
	if l.Cert != nil {
		have = l.Cert.DNSNames
	}
	return slices.Equal(sortedSet(cfg.dnsNames), sortedSet(have))
}

func sortedSet(s []string) []string { return slices.Compact(slices.Sorted(slices.Values(s))) }

// Issue signs a fresh leaf certificate for spiffeID with the current CA. The
// ID must be a workload ID in the CA's trust domain. The leaf gets a new key,
// a random 128-bit serial, client and server auth, NotBefore backdated by
// ClockSkew and NotAfter capped at the CA's.
func (ca *CA) Issue(spiffeID string, opts ...IssueOption) (*Leaf, error) {
	cfg := issueConfig{ttl: DefaultLeafTTL, alg: ECDSAP256}
	for _, o := range opts {
		o(&cfg)
	}
	if err := ValidateWorkloadID(spiffeID, ca.trustDomain); err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	if cfg.ttl < MinLeafTTL || cfg.ttl > MaxLeafTTL {
		return nil, fmt.Errorf("issue %s: TTL %s outside [%s, %s]", spiffeID, cfg.ttl, MinLeafTTL, MaxLeafTTL)
	}
	if len(cfg.dnsNames) > maxDNSNames {
		return nil, fmt.Errorf("issue %s: %d DNS names, at most %d", spiffeID, len(cfg.dnsNames), maxDNSNames)
	}
	for _, n := range cfg.dnsNames {
		if err := validateDNSName(n); err != nil {
			return nil, fmt.Errorf("issue %s: %w", spiffeID, err)
		}
	}
	now := ca.clock.Now()
	notBefore := now.Add(-ClockSkew)
	if notBefore.Before(ca.cert.NotBefore) {
		notBefore = ca.cert.NotBefore
	}
	notAfter := now.Add(cfg.ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("issue %s: CA certificate expired at %s", spiffeID, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	u, err := url.Parse(spiffeID)
	if err != nil { // unreachable after ValidateWorkloadID, kept for safety
		return nil, fmt.Errorf("issue: %w", err)
	}
	key, err := generateKey(cfg.alg)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", spiffeID, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ku := x509.KeyUsageDigitalSignature
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		ku |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// X509-SVIDs identify by URI SAN; the subject is informational.
		Subject:               pkix.Name{Organization: []string{"Gatehouse"}, CommonName: leafCommonName(u, cfg.dnsNames)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{u},
		DNSNames:              cfg.dnsNames,
	}
	der, err := x509.CreateCertificate(nil, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: sign: %w", spiffeID, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", spiffeID, err)
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &Leaf{
		CertPEM:  certPEM,
		KeyPEM:   keyPEM,
		ChainPEM: certPEM,
		Cert:     cert,
		Serial:   serialHex(cert),
		NotAfter: cert.NotAfter,
		SPIFFEID: spiffeID,
	}, nil
}

// IssueRole is Issue for spiffe://<trust-domain>/<role>/<name>.
func (ca *CA) IssueRole(role, name string, opts ...IssueOption) (*Leaf, error) {
	id, err := MakeSPIFFEID(ca.trustDomain, role, name)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	return ca.Issue(id, opts...)
}

// leafCommonName picks a readable CN: the first DNS name, else the last
// path segment of the SPIFFE ID, trimmed to the 64-byte X.520 limit.
func leafCommonName(u *url.URL, dns []string) string {
	cn := u.Path[strings.LastIndexByte(u.Path, '/')+1:]
	if len(dns) > 0 {
		cn = dns[0]
	}
	if len(cn) > 64 {
		cn = cn[:64]
	}
	return cn
}

// validateDNSName accepts host names and a leading "*." wildcard.
func validateDNSName(n string) error {
	if n == "" {
		return errors.New("empty DNS name")
	}
	if len(n) > 253 {
		return fmt.Errorf("DNS name %.32q...: longer than 253 characters", n)
	}
	name := strings.TrimPrefix(n, "*.")
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("DNS name %q: empty or over-long label", n)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("DNS name %q: label %q starts or ends with '-'", n, label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("DNS name %q: character %q not allowed", n, c)
			}
		}
	}
	return nil
}

// WriteLeaf writes prefix.crt (the chain, 0644) and prefix.key (0600), each
// atomically. The key is written first so a watcher that reacts to the
// certificate finds the matching key already in place.
func WriteLeaf(prefix string, l *Leaf) error {
	if err := writeFileAtomic(prefix+".key", l.KeyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(prefix+".crt", l.ChainPEM, 0o644)
}
