package certs

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// Limits from the SPIFFE-ID specification (section 2).
const (
	maxSPIFFEIDLen    = 2048
	maxTrustDomainLen = 255
	spiffeScheme      = "spiffe://"
)

// ValidateTrustDomain reports whether td is a valid SPIFFE trust domain name:
// 1–255 characters from [a-z0-9.-_]. Upper case is rejected rather than
// folded, so the same domain never has two spellings in certificates.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	if len(td) > maxTrustDomainLen {
		return fmt.Errorf("trust domain %.32q...: longer than %d characters", td, maxTrustDomainLen)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("trust domain %q: upper-case character %q (trust domains are lower case)", td, c)
		case c == ':':
			return fmt.Errorf("trust domain %q: a port is not allowed", td)
		case c == '@':
			return fmt.Errorf("trust domain %q: userinfo is not allowed", td)
		default:
			return fmt.Errorf("trust domain %q: character %q not allowed (want [a-z0-9.-_])", td, c)
		}
	}
	// The CA's name constraint is a URI domain: an IP address, or a name
	// with an empty label, cannot be one (x509 refuses it at Init).
	if strings.HasPrefix(td, ".") || strings.HasSuffix(td, ".") || strings.Contains(td, "..") {
		return fmt.Errorf("trust domain %q: empty label (a leading, trailing or doubled \".\")", td)
	}
	if net.ParseIP(td) != nil {
		return fmt.Errorf("trust domain %q: an IP address is not allowed (use a DNS-style name)", td)
	}
	return nil
}

// ParseSPIFFEID splits a SPIFFE ID into its trust domain and path (with a
// leading "/", or "" for the trust domain's own ID). It follows the SPIFFE-ID
// specification strictly: scheme "spiffe", lower-case trust domain, no port,
// userinfo, query or fragment, no percent-encoding, path segments non-empty
// and neither "." nor "..", no trailing slash.
func ParseSPIFFEID(id string) (trustDomain, path string, err error) {
	if id == "" {
		return "", "", errors.New("SPIFFE ID is empty")
	}
	if len(id) > maxSPIFFEIDLen {
		return "", "", fmt.Errorf("SPIFFE ID longer than %d bytes", maxSPIFFEIDLen)
	}
	if len(id) < len(spiffeScheme) || !strings.EqualFold(id[:len(spiffeScheme)], spiffeScheme) {
		return "", "", fmt.Errorf("SPIFFE ID %q: scheme must be spiffe://", id)
	}
	if id[:len(spiffeScheme)] != spiffeScheme {
		return "", "", fmt.Errorf("SPIFFE ID %q: scheme must be lower case", id)
	}
	rest := id[len(spiffeScheme):]
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		return "", "", fmt.Errorf("SPIFFE ID %q: query and fragment are not allowed", id)
	}
	trustDomain, path = rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		trustDomain, path = rest[:i], rest[i:]
	}
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return "", "", fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	if path == "" {
		return trustDomain, "", nil
	}
	if strings.HasSuffix(path, "/") {
		return "", "", fmt.Errorf("SPIFFE ID %q: trailing slash is not allowed", id)
	}
	for _, seg := range strings.Split(path[1:], "/") {
		if err := validatePathSegment(seg); err != nil {
			return "", "", fmt.Errorf("SPIFFE ID %q: %w", id, err)
		}
	}
	return trustDomain, path, nil
}

func validatePathSegment(seg string) error {
	switch seg {
	case "":
		return errors.New("empty path segment")
	case ".", "..":
		return fmt.Errorf("path segment %q is not allowed", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return fmt.Errorf("path segment %q: character %q not allowed (want [a-zA-Z0-9.-_])", seg, c)
		}
	}
	return nil
}

// ValidateWorkloadID checks that id is a SPIFFE ID with a non-empty path
// (a workload, not a whole trust domain) and, when trustDomain is not empty,
// that it belongs to that trust domain.
func ValidateWorkloadID(id, trustDomain string) error {
	td, path, err := ParseSPIFFEID(id)
	if err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("SPIFFE ID %q names a trust domain, not a workload (path is empty)", id)
	}
	if trustDomain != "" && td != trustDomain {
		return fmt.Errorf("SPIFFE ID %q is outside trust domain %q", id, trustDomain)
	}
	return nil
}

// MakeSPIFFEID builds spiffe://<trustDomain>/<role>/<name> and validates it.
func MakeSPIFFEID(trustDomain, role, name string) (string, error) {
	id := spiffeScheme + trustDomain + "/" + role + "/" + name
	if err := ValidateWorkloadID(id, trustDomain); err != nil {
		return "", err
	}
	return id, nil
}
