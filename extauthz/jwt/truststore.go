package jwt

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515 §4.1.7); used for lookup only
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Trust store bounds: a directory is operator-controlled, but a mistaken
// mount (a whole CA bundle tree, a log directory) must not exhaust memory.
const (
	trustMaxFileBytes = 1 << 20
	trustMaxCerts     = 10000
)

// isTrustStoreFile says which directory entries are read: *.pem, *.crt and
// *.cer. Other files (README, editor backups) are ignored, as are dot-files (which also
// skips Kubernetes' ..data symlink farm).
func isTrustStoreFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".pem", ".crt", ".cer":
		return true
	}
	return false
}

// TrustStore is a directory of PEM certificates whose keys may sign tokens
// that name them by x5t (SHA-1) or x5t#S256 (SHA-256) thumbprint of the DER.
// It is safe for concurrent use; Reload swaps in a new snapshot atomically and
// keeps the last good one when the directory has a bad file.
type TrustStore struct {
	dir    string
	logger *slog.Logger
	now    func() time.Time

	reloadMu sync.Mutex
	snap     atomic.Pointer[trustSnapshot]
}

type trustSnapshot struct {
	bySHA1   map[[sha1Len]byte]*trustedCert
	bySHA256 map[[sha256Len]byte]*trustedCert
}

type trustedCert struct {
	cert   *x509.Certificate
	file   string
	sha1   [sha1Len]byte
	sha256 [sha256Len]byte
}

// TrustStoreOption configures NewTrustStore.
type TrustStoreOption func(*TrustStore)

// WithTrustStoreLogger sets the logger (default slog.Default()).
func WithTrustStoreLogger(l *slog.Logger) TrustStoreOption {
	return func(t *TrustStore) {
		if l != nil {
			t.logger = l
		}
	}
}

// WithTrustStoreClock sets the clock used to warn about certificates outside
// their validity period at load time (default time.Now). Lookups use the
// Verifier's clock.
func WithTrustStoreClock(now func() time.Time) TrustStoreOption {
	return func(t *TrustStore) {
		if now != nil {
			t.now = now
		}
	}
}

// NewTrustStore loads dir. Unlike Reload, a bad directory at startup is an
// error: there is no last good set to fall back to.
func NewTrustStore(dir string, opts ...TrustStoreOption) (*TrustStore, error) {
	t := &TrustStore{dir: dir, logger: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(t)
	}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Dir returns the directory the store reads.
func (t *TrustStore) Dir() string { return t.dir }

// Len returns the number of distinct certificates in the current snapshot.
func (t *TrustStore) Len() int {
	s := t.snap.Load()
	if s == nil {
		return 0
	}
	return len(s.bySHA256)
}

// Reload re-reads the directory. On any error — unreadable directory, a file
// that is not PEM, holds a non-certificate block (e.g. a private key) or a
// certificate with a weak key — it returns an error naming the file and keeps
// serving the previous snapshot. Expired certificates are loaded but never
// match a lookup; they are logged so operators notice.
func (t *TrustStore) Reload() error {
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	snap, err := t.load()
	if err != nil {
		if t.snap.Load() != nil {
			t.logger.Warn("trust store reload failed, keeping last good set", "dir", t.dir, "error", err)
		}
		return err
	}
	t.snap.Store(snap)
	t.logger.Info("trust store loaded", "dir", t.dir, "certificates", len(snap.bySHA256))
	return nil
}

func (t *TrustStore) load() (*trustSnapshot, error) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return nil, fmt.Errorf("trust store %s: %w", t.dir, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	snap := &trustSnapshot{
		bySHA1:   make(map[[sha1Len]byte]*trustedCert),
		bySHA256: make(map[[sha256Len]byte]*trustedCert),
	}
	now := t.now()
	for _, de := range entries {
		if !isTrustStoreFile(de.Name()) {
			continue
		}
		path := filepath.Join(t.dir, de.Name())
		fi, err := os.Stat(path) // follows symlinks, as ConfigMap/Secret mounts use them
		if err != nil {
			return nil, fmt.Errorf("trust store file %s: %w", path, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		certs, err := readPEMCerts(path)
		if err != nil {
			return nil, fmt.Errorf("trust store file %s: %w", path, err)
		}
		for _, c := range certs {
			if err := validatePublicKey(c.PublicKey); err != nil {
				return nil, fmt.Errorf("trust store file %s: certificate %q: %w", path, c.Subject.String(), err)
			}
			tc := &trustedCert{cert: c, file: path, sha1: sha1.Sum(c.Raw), sha256: sha256.Sum256(c.Raw)}
			if _, dup := snap.bySHA256[tc.sha256]; dup {
				continue
			}
			if len(snap.bySHA256) >= trustMaxCerts {
				return nil, fmt.Errorf("trust store %s: more than %d certificates", t.dir, trustMaxCerts)
			}
			snap.bySHA256[tc.sha256] = tc
			snap.bySHA1[tc.sha1] = tc
			if now.After(c.NotAfter) || now.Before(c.NotBefore) {
				t.logger.Warn("trust store certificate is outside its validity period and will not be used",
					"file", path, "subject", c.Subject.String(), "not_before", c.NotBefore, "not_after", c.NotAfter)
			}
		}
	}
	return snap, nil
}

// readPEMCerts reads every CERTIFICATE block of one file. Anything else —
// other PEM block types, non-PEM bytes, no certificate at all — is an error.
func readPEMCerts(path string) ([]*x509.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, trustMaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > trustMaxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", trustMaxFileBytes)
	}
	var certs []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q; only CERTIFICATE blocks belong in the trust store", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data that is not PEM")
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// lookup finds the certificate a token names. With both thumbprints present
// they must name the same certificate. The certificate must be within its
// validity period now and, if it restricts key usage, allow digital
// signatures.
func (t *TrustStore) lookup(x5t, x5tS256 []byte, now time.Time) (*trustedCert, error) {
	snap := t.snap.Load()
	if snap == nil {
		return nil, fail(ReasonUntrustedCert, "trust store is empty")
	}
	var tc *trustedCert
	switch {
	case x5tS256 != nil:
		tc = snap.bySHA256[[sha256Len]byte(x5tS256)]
		if tc != nil && x5t != nil && subtle.ConstantTimeCompare(tc.sha1[:], x5t) != 1 {
			return nil, fail(ReasonUntrustedCert, "x5t and x5t#S256 name different certificates")
		}
	case x5t != nil:
		tc = snap.bySHA1[[sha1Len]byte(x5t)]
	}
	if tc == nil {
		return nil, fail(ReasonUntrustedCert, "thumbprint not in the trust store")
	}
	if now.After(tc.cert.NotAfter) || now.Before(tc.cert.NotBefore) {
		return nil, fail(ReasonUntrustedCert, "trust store certificate %q is not valid now", tc.cert.Subject.String())
	}
	if tc.cert.KeyUsage != 0 && tc.cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fail(ReasonUntrustedCert, "trust store certificate %q does not allow digital signatures", tc.cert.Subject.String())
	}
	return tc, nil
}

// sha1Matches reports whether want is the SHA-1 thumbprint (x5t) of der.
func sha1Matches(der, want []byte) bool {
	sum := sha1.Sum(der) //nolint:gosec // thumbprint comparison, not a security hash
	return subtle.ConstantTimeCompare(sum[:], want) == 1
}
