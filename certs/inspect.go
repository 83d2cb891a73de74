package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// CertInfo summarises one certificate for humans (gatehouse ca inspect).
type CertInfo struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"` // lower-case hex
	URIs      []string  `json:"uris,omitempty"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	IPs       []string  `json:"ips,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IsCA      bool      `json:"is_ca"`
	KeyType   string    `json:"key_type"`
	SHA256    string    `json:"sha256"` // fingerprint of the DER, colon-separated upper-case hex
}

// Inspect summarises every certificate in a PEM file. Private key blocks
// are skipped without being decoded, so inspecting a combined file never
// echoes key material. Anything that is not complete PEM is an error.
func Inspect(data []byte) ([]CertInfo, error) {
	blocks, err := decodePEMStrict(data)
	if err != nil {
		return nil, err
	}
	var out []CertInfo
	for i, b := range blocks {
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i+1, err)
		}
		out = append(out, infoOf(c))
	}
	if len(out) == 0 {
		return nil, errors.New("no CERTIFICATE blocks found")
	}
	return out, nil
}

func infoOf(c *x509.Certificate) CertInfo {
	sum := sha256.Sum256(c.Raw)
	hx := strings.ToUpper(hex.EncodeToString(sum[:]))
	var fp strings.Builder
	for i := 0; i < len(hx); i += 2 {
		if i > 0 {
			fp.WriteByte(':')
		}
		fp.WriteString(hx[i : i+2])
	}
	info := CertInfo{
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		Serial:    serialHex(c),
		DNSNames:  c.DNSNames,
		NotBefore: c.NotBefore,
		NotAfter:  c.NotAfter,
		IsCA:      c.BasicConstraintsValid && c.IsCA,
		KeyType:   c.PublicKeyAlgorithm.String(),
		SHA256:    fp.String(),
	}
	for _, u := range c.URIs {
		info.URIs = append(info.URIs, u.String())
	}
	for _, ip := range c.IPAddresses {
		info.IPs = append(info.IPs, ip.String())
	}
	return info
}

// WriteText prints the summary as aligned "key: value" lines, marking the
// validity as expired or not yet valid relative to now.
func (c CertInfo) WriteText(w io.Writer, now time.Time) error {
	status := "valid"
	switch {
	case now.After(c.NotAfter):
		status = "EXPIRED"
	case now.Before(c.NotBefore):
		status = "NOT YET VALID"
	}
	lines := []struct{ k, v string }{
		{"Subject", c.Subject},
		{"Issuer", c.Issuer},
		{"Serial", c.Serial},
		{"CA", fmt.Sprint(c.IsCA)},
		{"Key", c.KeyType},
		{"Not before", c.NotBefore.UTC().Format(time.RFC3339)},
		{"Not after", c.NotAfter.UTC().Format(time.RFC3339) + " (" + status + ")"},
	}
	for _, u := range c.URIs {
		lines = append(lines, struct{ k, v string }{"URI SAN", u})
	}
	for _, d := range c.DNSNames {
		lines = append(lines, struct{ k, v string }{"DNS SAN", d})
	}
	for _, ip := range c.IPs {
		lines = append(lines, struct{ k, v string }{"IP SAN", ip})
	}
	lines = append(lines, struct{ k, v string }{"SHA-256", c.SHA256})
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "  %-11s %s\n", l.k+":", l.v); err != nil {
			return err
		}
	}
	return nil
}
