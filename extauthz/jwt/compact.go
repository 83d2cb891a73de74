package jwt

import (
	"encoding/base64"
	"errors"
	"strings"
)

// Limits on the JOSE header and claims JSON. Tokens are already bounded by
// MaxTokenBytes; these stop pathological nesting from costing stack and time.
const (
	maxJSONDepth   = 32
	maxX5CCerts    = 8
	sha1Len        = 20
	sha256Len      = 32
	x5tHeader      = "x5t"
	x5tS256Header  = "x5t#S256"
	x5cHeader      = "x5c"
	kidHeader      = "kid"
	algHeader      = "alg"
	critHeader     = "crit"
	typHeader      = "typ"
	compactPartSep = '.'
)

// joseHeader is the decoded protected header of a compact JWS.
type joseHeader struct {
	Alg     string
	Kid     string   // "" when absent
	Typ     string   // "" when absent
	X5T     []byte   // SHA-1 thumbprint (decoded), nil when absent
	X5TS256 []byte   // SHA-256 thumbprint (decoded), nil when absent
	X5C     [][]byte // DER certificates, leaf first; nil when absent
}

// compactJWS is a token that passed the strict syntax checks. Nothing in it is
// trusted yet.
type compactJWS struct {
	Header       joseHeader
	SigningInput []byte // ASCII(BASE64URL(header) || '.' || BASE64URL(payload)), as received
	Payload      []byte // decoded payload
	Signature    []byte // decoded signature
}

// b64 is strict base64url without padding: RFC 7515 §2 forbids '=' and the
// strict mode rejects non-zero trailing bits, so every byte string has exactly
// one accepted encoding.
var b64 = base64.RawURLEncoding.Strict()

// parseCompact applies the RFC 7515/8725 syntax rules before anything else
// looks at the token: only the compact serialization (exactly three non-empty
// base64url parts — JWS JSON serialization and 5-part JWE are refused before
// any JSON parsing), only base64url characters (no whitespace, padding, '+' or
// '/'), header JSON that is an object without duplicate member names, a
// supported asymmetric alg, and none of the forbidden or crit headers.
//
// The payload is decoded but not parsed: a JWS payload need not be JSON.
func parseCompact(token string, maxBytes int) (*compactJWS, error) {
	if len(token) == 0 {
		return nil, fail(ReasonMalformed, "empty token")
	}
	if maxBytes > 0 && len(token) > maxBytes {
		return nil, fail(ReasonTooLarge, "token is %d bytes, limit %d", len(token), maxBytes)
	}
	if token[0] == '{' {
		return nil, fail(ReasonMalformed, "JWS JSON serialization is not accepted, only compact")
	}
	dots := 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c == compactPartSep:
			dots++
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return nil, fail(ReasonMalformed, "character at offset %d is not base64url", i)
		}
	}
	switch dots {
	case 2:
	case 4:
		return nil, fail(ReasonMalformed, "JWE (5 parts) is not accepted")
	default:
		return nil, fail(ReasonMalformed, "compact JWS needs 3 parts, got %d", dots+1)
	}
	h64, rest, _ := strings.Cut(token, ".")
	p64, s64, _ := strings.Cut(rest, ".")
	if h64 == "" {
		return nil, fail(ReasonMalformed, "empty header")
	}

	hdrJSON, err := b64.DecodeString(h64)
	if err != nil {
		return nil, fail(ReasonMalformed, "header is not base64url: %w", err)
	}
	payload, err := b64.DecodeString(p64)
	if err != nil {
		return nil, fail(ReasonMalformed, "payload is not base64url: %w", err)
	}
	sig, err := b64.DecodeString(s64)
	if err != nil {
		return nil, fail(ReasonMalformed, "signature is not base64url: %w", err)
	}

	raw, err := decodeStrictObject(hdrJSON)
	if err != nil {
		return nil, annotate(err, "header")
	}
	hdr, err := readHeader(raw)
	if err != nil {
		return nil, err // alg "none" is reported here, as alg_not_allowed
	}
	if len(sig) == 0 {
		return nil, fail(ReasonMalformed, "empty signature (unsecured JWS)")
	}
	return &compactJWS{
		Header:       hdr,
		SigningInput: []byte(token[:len(h64)+1+len(p64)]),
		Payload:      payload,
		Signature:    sig,
	}, nil
}

// readHeader extracts the members we act on from a decoded header object.
// Member names are matched exactly (encoding/json's struct decoding would
// match "ALG" to alg, a parser differential).
func readHeader(raw map[string]any) (joseHeader, error) {
	var h joseHeader
	// jku, x5u and jwk would let the token name its own verification key
	// (RFC 8725 §3.10); b64 changes how the payload is encoded (RFC 7797) and
	// must come with crit; enc and zip belong to JWE. Rather than ignore them,
	// tokens carrying any of them are rejected outright, so a token cannot mean
	// one thing to us and another to a laxer consumer.
	for _, name := range [...]string{"jku", "x5u", "jwk", "b64", "enc", "zip"} {
		if _, ok := raw[name]; ok {
			return h, fail(ReasonForbiddenHeader, "header %q is not accepted", name)
		}
	}
	if _, ok := raw[critHeader]; ok {
		return h, fail(ReasonUnsupportedCrit, "no critical header extension is supported")
	}

	alg, ok := raw[algHeader].(string)
	if !ok {
		return h, fail(ReasonMalformed, "header alg missing or not a string")
	}
	if _, ok := algorithmSpec(alg); !ok {
		// Covers "none" in any case, all HMAC algorithms and anything unknown.
		return h, fail(ReasonAlgNotAllowed, "alg is not a supported asymmetric signature algorithm")
	}
	h.Alg = alg

	if v, ok := raw[kidHeader]; ok {
		s, ok := v.(string)
		if !ok {
			return h, fail(ReasonMalformed, "header kid is not a string")
		}
		h.Kid = s
	}
	if v, ok := raw[typHeader]; ok {
		s, ok := v.(string)
		if !ok {
			return h, fail(ReasonMalformed, "header typ is not a string")
		}
		h.Typ = s
	}
	var err error
	if h.X5T, err = thumbprintHeader(raw, x5tHeader, sha1Len); err != nil {
		return h, err
	}
	if h.X5TS256, err = thumbprintHeader(raw, x5tS256Header, sha256Len); err != nil {
		return h, err
	}
	if v, ok := raw[x5cHeader]; ok {
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			return h, fail(ReasonMalformed, "header x5c is not a non-empty array")
		}
		if len(arr) > maxX5CCerts {
			return h, fail(ReasonMalformed, "header x5c has %d certificates, limit %d", len(arr), maxX5CCerts)
		}
		h.X5C = make([][]byte, len(arr))
		for i, c := range arr {
			s, ok := c.(string)
			if !ok {
				return h, fail(ReasonMalformed, "header x5c[%d] is not a string", i)
			}
			// RFC 7515 §4.1.6: base64 (not base64url) DER.
			der, err := base64.StdEncoding.Strict().DecodeString(s)
			if err != nil {
				return h, fail(ReasonMalformed, "header x5c[%d] is not base64: %w", i, err)
			}
			h.X5C[i] = der
		}
	}
	return h, nil
}

func thumbprintHeader(raw map[string]any, name string, size int) ([]byte, error) {
	v, ok := raw[name]
	if !ok {
		return nil, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, fail(ReasonMalformed, "header %s is not a string", name)
	}
	d, err := b64.DecodeString(s)
	if err != nil || len(d) != size {
		return nil, fail(ReasonMalformed, "header %s is not a base64url %d-byte thumbprint", name, size)
	}
	return d, nil
}

// annotate prefixes the cause of a *Error with where it happened, keeping
// the reason.
func annotate(err error, where string) error {
	var e *Error
	if errors.As(err, &e) {
		return &Error{Reason: e.Reason, Issuer: e.Issuer, Err: prefixErr{where, e.Err}}
	}
	return err
}

type prefixErr struct {
	where string
	err   error
}

func (p prefixErr) Error() string {
	if p.err == nil {
		return p.where
	}
	return p.where + ": " + p.err.Error()
}
func (p prefixErr) Unwrap() error { return p.err }
