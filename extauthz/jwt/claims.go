package jwt

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// maxNumericDate is 9999-12-31T23:59:59Z: later dates are nonsense and would
// overflow time arithmetic.
const maxNumericDate = 253402300799

// checkClaims validates the registered claims (RFC 7519 §4.1, RFC 8725 §3.8,
// §3.9) and fills a Result. iss has already matched ic exactly.
//
//   - exp is required, must be a positive NumericDate, and now must be before
//     exp+skew;
//   - nbf, when present, must be at or before now+skew;
//   - iat, when present, must be at or before now+skew (no tokens from the
//     future);
//   - aud (string or array of strings) must contain a configured audience;
//   - sub must be a non-empty string: the identity needs a subject.
func checkClaims(claims map[string]any, ic *issuer, now time.Time) (*Result, error) {
	res := &Result{Issuer: ic.cfg.Issuer, Claims: claims, Kind: ic.cfg.Kind}

	exp, ok, err := numericDate(claims, "exp")
	if err != nil {
		return nil, err
	}
	if !ok || exp.Unix() <= 0 {
		return nil, fail(ReasonMissingExp, "exp is required and must be positive")
	}
	if !now.Before(exp.Add(ic.skew)) {
		return nil, fail(ReasonExpired, "token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	res.Expiry = exp

	nbf, ok, err := numericDate(claims, "nbf")
	if err != nil {
		return nil, err
	}
	if ok {
		if nbf.After(now.Add(ic.skew)) {
			return nil, fail(ReasonNotYetValid, "token not valid before %s", nbf.UTC().Format(time.RFC3339))
		}
		res.NotBefore = nbf
	}

	iat, ok, err := numericDate(claims, "iat")
	if err != nil {
		return nil, err
	}
	if ok {
		if iat.After(now.Add(ic.skew)) {
			return nil, fail(ReasonIssuedInFuture, "token issued in the future")
		}
		res.IssuedAt = iat
	}

	aud, err := audience(claims)
	if err != nil {
		return nil, err
	}
	if !containsAny(aud, ic.cfg.Audiences) {
		return nil, fail(ReasonWrongAudience, "aud does not contain a configured audience")
	}
	res.Audience = aud

	switch sub := claims["sub"].(type) {
	case string:
		if sub == "" {
			return nil, fail(ReasonMissingSubject, "sub is empty")
		}
		res.Subject = sub
	case nil:
		return nil, fail(ReasonMissingSubject, "sub is missing")
	default:
		return nil, fail(ReasonInvalidClaim, "sub is not a string")
	}

	if email, ok := claims["email"].(string); ok {
		res.Email = identity.VerifiedEmail(email, claims["email_verified"])
	}
	res.Roles = stringList(lookupClaim(claims, ic.cfg.RolesClaim))
	res.Groups = stringList(lookupClaim(claims, ic.cfg.GroupsClaim))
	return res, nil
}

// numericDate reads a NumericDate claim. ok is false when absent; a present
// claim of the wrong type or out of range is an error.
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, present := claims[name]
	if !present {
		return time.Time{}, false, nil
	}
	n, isNum := v.(json.Number)
	if !isNum {
		return time.Time{}, false, fail(ReasonInvalidClaim, "%s is not a number", name)
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > maxNumericDate {
		return time.Time{}, false, fail(ReasonInvalidClaim, "%s is not a valid NumericDate", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

func audience(claims map[string]any) ([]string, error) {
	switch a := claims["aud"].(type) {
	case nil:
		return nil, fail(ReasonWrongAudience, "aud is missing")
	case string:
		return []string{a}, nil
	case []any:
		out := make([]string, 0, len(a))
		for _, v := range a {
			s, ok := v.(string)
			if !ok {
				return nil, fail(ReasonInvalidClaim, "aud contains a non-string")
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fail(ReasonInvalidClaim, "aud is neither string nor array")
	}
}

func containsAny(have, want []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// lookupClaim finds a claim by exact name first, then as a dotted path into
// nested objects (e.g. Keycloak's "realm_access.roles").
func lookupClaim(claims map[string]any, name string) any {
	if name == "" {
		return nil
	}
	if v, ok := claims[name]; ok {
		return v
	}
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[part]; !ok {
			return nil
		}
	}
	return cur
}

// stringList accepts an array (non-string members are ignored) or a
// space-separated string (the OAuth "scope" convention).
func stringList(v any) []string {
	switch t := v.(type) {
	case string:
		return strings.Fields(t)
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
