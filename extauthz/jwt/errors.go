package jwt

import (
	"errors"
	"fmt"
)

// Reason is a short, machine-friendly cause of a rejection. It is safe to log
// and to count in metrics: it never contains any part of the token.
type Reason string

// Rejection reasons. The server maps every one of them to 401 with
// `WWW-Authenticate: Bearer error="invalid_token"`; they exist for logs,
// metrics and tests.
const (
	ReasonMalformed        Reason = "malformed"            // not a strict compact JWS, bad base64url, bad JSON
	ReasonTooLarge         Reason = "too_large"            // token longer than MaxTokenBytes
	ReasonDuplicateKey     Reason = "duplicate_key"        // a JSON member name repeats in header or claims
	ReasonAlgNotAllowed    Reason = "alg_not_allowed"      // none, HMAC, unknown, or not in the issuer's allow-list
	ReasonForbiddenHeader  Reason = "forbidden_header"     // jku, x5u, jwk, b64, enc or zip present
	ReasonWrongType        Reason = "wrong_type"           // typ is not the issuer's IssuerConfig.Type
	ReasonUnsupportedCrit  Reason = "unsupported_crit"     // crit present: no extension is understood
	ReasonUnknownIssuer    Reason = "unknown_issuer"       // iss missing or not configured
	ReasonStrategyDisabled Reason = "strategy_not_enabled" // the header asks for a key source the issuer does not allow
	ReasonMissingKID       Reason = "missing_kid"          // no kid, x5t or x5c to select a key
	ReasonUnknownKID       Reason = "unknown_kid"          // kid not in the issuer's JWKS (after a rate-limited refetch)
	ReasonAmbiguousKID     Reason = "ambiguous_kid"        // the JWKS lists the kid more than once
	ReasonKeyUnavailable   Reason = "key_unavailable"      // the issuer's JWKS has never been fetched successfully
	ReasonKeyMismatch      Reason = "key_alg_mismatch"     // header alg does not fit the key (type, curve, JWK alg/use/key_ops)
	ReasonInvalidKey       Reason = "invalid_key"          // the JWKS entry for the kid could not be parsed or validated
	ReasonWeakKey          Reason = "weak_key"             // RSA < 2048 bits, small exponent, ROCA modulus
	ReasonUntrustedCert    Reason = "untrusted_cert"       // x5t not in the trust store, or x5c chain not valid
	ReasonBadSignature     Reason = "bad_signature"        // the signature does not verify
	ReasonMissingExp       Reason = "missing_exp"          // exp absent, not a number, or zero
	ReasonExpired          Reason = "expired"              // exp (plus skew) has passed
	ReasonNotYetValid      Reason = "not_yet_valid"        // nbf (minus skew) is in the future
	ReasonIssuedInFuture   Reason = "iat_in_future"        // iat (minus skew) is in the future
	ReasonWrongAudience    Reason = "wrong_audience"       // aud does not contain a configured audience
	ReasonMissingSubject   Reason = "missing_subject"      // sub absent or empty
	ReasonInvalidClaim     Reason = "invalid_claim"        // a registered claim has the wrong JSON type
	ReasonVerifierClosed   Reason = "verifier_closed"      // Verify called after Close
	ReasonContextCanceled  Reason = "context_canceled"     // the caller gave up while keys were being fetched
)

// Error is the only error type Verify returns. Use errors.As to read Reason.
// Neither Error() nor the wrapped cause ever contains the token or any claim
// value taken from it; Issuer is only set once iss matched a configured issuer
// (so it is a configured value, not attacker input).
type Error struct {
	Reason Reason
	Issuer string
	Err    error // underlying cause, for logs; may be nil
}

func (e *Error) Error() string {
	msg := "jwt: invalid token: " + string(e.Reason)
	if e.Issuer != "" {
		msg += " (issuer " + e.Issuer + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is lets errors.Is(err, &Error{Reason: r}) match on the reason alone.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Reason == e.Reason && (t.Issuer == "" || t.Issuer == e.Issuer)
}

// ReasonOf returns the Reason of err, or "" if err is not an *Error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func fail(r Reason, format string, args ...any) *Error {
	var err error
	if format != "" {
		err = fmt.Errorf(format, args...)
	}
	return &Error{Reason: r, Err: err}
}

func failWrap(r Reason, err error) *Error {
	return &Error{Reason: r, Err: err}
}
