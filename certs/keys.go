package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
)

// KeyAlgorithm selects the kind of key generated for a CA or a leaf.
type KeyAlgorithm string

const (
	// ECDSAP256 is the default: small, fast, universally supported by Envoy.
	ECDSAP256 KeyAlgorithm = "ecdsa-p256"
	// ECDSAP384 is for policies that demand a 192-bit security level.
	ECDSAP384 KeyAlgorithm = "ecdsa-p384"
	// RSA3072 is for peers that cannot do ECDSA.
	RSA3072 KeyAlgorithm = "rsa-3072"
)

// ParseKeyAlgorithm accepts the names used on the command line.
func ParseKeyAlgorithm(s string) (KeyAlgorithm, error) {
	switch a := KeyAlgorithm(s); a {
	case ECDSAP256, ECDSAP384, RSA3072:
		return a, nil
	}
	return "", fmt.Errorf("unknown key algorithm %q (want %s, %s or %s)", s, ECDSAP256, ECDSAP384, RSA3072)
}

func generateKey(alg KeyAlgorithm) (crypto.Signer, error) {
	switch alg {
	case ECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("unknown key algorithm %q", alg)
}

// keyAlgorithmOf maps an existing key back to its algorithm, so a rotated
// CA keeps the kind of key its predecessor had unless told otherwise.
func keyAlgorithmOf(k crypto.Signer) KeyAlgorithm {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve == elliptic.P384() {
			return ECDSAP384
		}
	case *rsa.PrivateKey:
		return RSA3072
	}
	return ECDSAP256
}

func marshalKeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// randomSerial returns a uniformly random, non-zero 128-bit serial number,
// as CA/Browser-forum practice recommends (at least 64 bits of entropy).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// maxPEMFileSize bounds every certificate or key file read, so a mistaken
// path (a log file, /dev/zero) cannot exhaust memory.
const maxPEMFileSize = 1 << 20

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxPEMFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPEMFileSize)
	}
	return data, nil
}

// decodePEMStrict splits data into PEM blocks and fails if anything but
// whitespace surrounds them. A file cut off mid-write ends in a partial block
// that pem.Decode silently skips, so this is what catches half-written files.
func decodePEMStrict(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	rest := data
	for {
		if len(bytes.TrimSpace(rest)) == 0 {
			break
		}
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(blocks) == 0 {
				return nil, errors.New("no complete PEM block (file empty, truncated or not PEM)")
			}
			return nil, fmt.Errorf("data after PEM block %d is not a complete PEM block (file truncated or corrupt)", len(blocks))
		}
		blocks = append(blocks, b)
	}
	if len(blocks) == 0 {
		return nil, errors.New("file is empty")
	}
	return blocks, nil
}

// parseCertsPEM parses a file of CERTIFICATE blocks only.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	blocks, err := decodePEMStrict(data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", i+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// parseKeyPEM parses exactly one unencrypted private key in PKCS#8, SEC 1
// ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY") form.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	blocks, err := decodePEMStrict(data)
	if err != nil {
		return nil, err
	}
	// OpenSSL writes "EC PARAMETERS" before SEC 1 keys; it is harmless.
	var keys []*pem.Block
	for _, b := range blocks {
		if b.Type != "EC PARAMETERS" {
			keys = append(keys, b)
		}
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("want exactly one private key PEM block, found %d", len(keys))
	}
	b := keys[0]
	var k any
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted private keys are not supported")
	default:
		return nil, fmt.Errorf("PEM block is %q, want PRIVATE KEY", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", b.Type, err)
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported private key type %T", k)
}

// keyMatches reports whether key is the private half of cert's public key.
func keyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// writeFileAtomic writes data to path with the given mode via a temporary
// file in the same directory and a rename, so readers (and the file watcher)
// never see a half-written file and a key file is never briefly readable by
// others: os.CreateTemp creates it 0600 before anything is written.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ensurePrivateDir creates dir with mode 0700, or checks that an existing
// one is not open to group or others.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("directory %s has mode %04o; a CA directory must be private (chmod 700 %s)", dir, perm, dir)
	}
	return nil
}
