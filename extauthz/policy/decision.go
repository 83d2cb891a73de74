package policy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Sentinel errors returned (wrapped) alongside a deny decision, so callers can
// count why requests were denied without parsing reasons.
var (
	// ErrNoPolicy: no policy is loaded, or the policy directory is empty.
	ErrNoPolicy = errors.New("no policy loaded")
	// ErrUndefined: the query had no result (e.g. no rule, no default).
	ErrUndefined = errors.New("policy decision undefined")
	// ErrInvalidResult: the query result has the wrong shape or types.
	ErrInvalidResult = errors.New("invalid policy result")
	// ErrEval: evaluation failed (builtin error, conflict, timeout).
	ErrEval = errors.New("policy evaluation failed")
	// ErrInput: the request could not be turned into policy input.
	ErrInput = errors.New("invalid policy input")
)

// Header is one header to add, in the order the policy listed values.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// QueryParam is one query parameter to set.
type QueryParam struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// MaxHeaderValueBytes bounds one header value or query parameter a policy
// returns. Values are passed whole (a cut token is a corrupt one), so the
// bound refuses the result instead: a policy returning more has a bug.
const MaxHeaderValueBytes = 32 << 10

// Decision is the outcome of one evaluation, in opa-envoy-plugin's result
// vocabulary. A zero Decision denies.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Headers: added to the upstream request when allowed, sent to the client
	// when denied (opa-envoy-plugin "headers").
	Headers []Header `json:"headers,omitempty"`
	// RemoveHeaders: removed from the upstream request when allowed.
	RemoveHeaders []string `json:"request_headers_to_remove,omitempty"`
	// RemoveQueryParams: removed from the upstream request when allowed.
	RemoveQueryParams []string `json:"query_parameters_to_remove,omitempty"`
	// SetQueryParams: set on the upstream request when allowed.
	SetQueryParams []QueryParam `json:"query_parameters_to_set,omitempty"`
	// ResponseHeaders: added to the response sent downstream.
	ResponseHeaders []Header `json:"response_headers_to_add,omitempty"`
	// Body and HTTPStatus shape the denial response; HTTPStatus is 0 when the
	// policy did not set one (the server picks 403).
	Body       string `json:"body,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
	// DynamicMetadata is emitted as Envoy dynamic metadata; numbers are float64
	// so structpb.NewStruct accepts it.
	DynamicMetadata map[string]any `json:"dynamic_metadata,omitempty"`
	// Reason explains a deny that was not the policy's own choice, or carries
	// the policy's optional "reason" string.
	Reason string `json:"reason,omitempty"`
	// Revision of the policy set that decided; empty if none was loaded.
	Revision string `json:"revision,omitempty"`
	// ID is random per evaluation, for correlating logs with responses.
	ID string `json:"decision_id"`
}

// newDecisionID returns 128 random bits in hex.
func newDecisionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b[:])
}

// deny builds a failed-closed decision.
func deny(id, revision, reason string) *Decision {
	return &Decision{ID: id, Revision: revision, Reason: reason}
}

// parseResult fills d from a query result: either a boolean or an object as
// opa-envoy-plugin accepts. Unknown keys are ignored; a known key with the
// wrong type makes the whole result invalid, and the caller denies.
func parseResult(v any, d *Decision) error {
	switch r := v.(type) {
	case bool:
		d.Allowed = r
		return nil
	case map[string]any:
		return parseObject(r, d)
	}
	return fmt.Errorf("%w: result is %s, want boolean or object", ErrInvalidResult, typeName(v))
}

func parseObject(r map[string]any, d *Decision) error {
	var out Decision
	av, ok := r["allowed"]
	if !ok {
		return fmt.Errorf("%w: object result has no \"allowed\" key", ErrInvalidResult)
	}
	allowed, ok := av.(bool)
	if !ok {
		return fmt.Errorf("%w: \"allowed\" is %s, want boolean", ErrInvalidResult, typeName(av))
	}
	var err error
	if out.Headers, err = headersField(r, "headers"); err != nil {
		return err
	}
	if out.ResponseHeaders, err = headersField(r, "response_headers_to_add"); err != nil {
		return err
	}
	if out.RemoveHeaders, err = stringsField(r, "request_headers_to_remove"); err != nil {
		return err
	}
	if out.RemoveQueryParams, err = stringsField(r, "query_parameters_to_remove"); err != nil {
		return err
	}
	qs, err := headersField(r, "query_parameters_to_set")
	if err != nil {
		return err
	}
	for _, q := range qs {
		out.SetQueryParams = append(out.SetQueryParams, QueryParam{Key: q.Name, Value: q.Value})
	}
	if out.Body, err = stringField(r, "body"); err != nil {
		return err
	}
	out.Reason = reasonField(r)
	if v, ok := r["http_status"]; ok {
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%w: \"http_status\" is %s, want number", ErrInvalidResult, typeName(v))
		}
		code, err := n.Int64()
		if err != nil || http.StatusText(int(code)) == "" {
			return fmt.Errorf("%w: \"http_status\" %s is not an HTTP status code", ErrInvalidResult, n)
		}
		out.HTTPStatus = int(code)
	}
	if v, ok := r["dynamic_metadata"]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%w: \"dynamic_metadata\" is %s, want object", ErrInvalidResult, typeName(v))
		}
		md, err := normalizeNumbers(m)
		if err != nil {
			return fmt.Errorf("%w: \"dynamic_metadata\": %w", ErrInvalidResult, err)
		}
		out.DynamicMetadata = md.(map[string]any)
	}
	out.Allowed = allowed
	out.ID, out.Revision = d.ID, d.Revision
	*d = out
	return nil
}

// headersField accepts {"name": "v"} or {"name": ["v1", "v2"]}, or an array
// of such objects (opa-envoy-plugin's form for repeating a name across
// objects). Within an object names are emitted sorted, so responses are
// deterministic; objects keep their order.
func headersField(r map[string]any, key string) ([]Header, error) {
	v, ok := r[key]
	if !ok {
		return nil, nil
	}
	switch x := v.(type) {
	case map[string]any:
		return appendHeaders(nil, key, x)
	case []any:
		var hs []Header
		for i, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%w: %q[%d] is %s, want object", ErrInvalidResult, key, i, typeName(e))
			}
			var err error
			if hs, err = appendHeaders(hs, key, m); err != nil {
				return nil, err
			}
		}
		return hs, nil
	}
	return nil, fmt.Errorf("%w: %q is %s, want object or array of objects", ErrInvalidResult, key, typeName(v))
}

// appendHeaders appends the name → value(s) pairs of m to hs, names sorted.
func appendHeaders(hs []Header, key string, m map[string]any) ([]Header, error) {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	add := func(name string, s string) error {
		if len(s) > MaxHeaderValueBytes {
			return fmt.Errorf("%w: %q value of %q is %d bytes, over %d", ErrInvalidResult, key, name, len(s), MaxHeaderValueBytes)
		}
		hs = append(hs, Header{Name: name, Value: s})
		return nil
	}
	for _, name := range names {
		if name == "" || strings.ContainsAny(name, "\r\n\x00") {
			what := "header name"
			if key == "query_parameters_to_set" {
				what = "parameter name"
			}
			return nil, fmt.Errorf("%w: %q has invalid %s %q", ErrInvalidResult, key, what, name)
		}
		switch hv := m[name].(type) {
		case string:
			if err := add(name, hv); err != nil {
				return nil, err
			}
		case []any:
			for _, e := range hv {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("%w: %q value of %q is %s, want string", ErrInvalidResult, key, name, typeName(e))
				}
				if err := add(name, s); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("%w: %q value of %q is %s, want string or array of strings", ErrInvalidResult, key, name, typeName(hv))
		}
	}
	return hs, nil
}

// maxReason bounds the reason a decision log carries.
const maxReason = 1024

// reasonField is the policy's "reason" for the decision log: a string, or
// the JSON of any other value. It is not opa-envoy-plugin's key, and its
// policies return arbitrary values under it, so no shape is refused.
func reasonField(r map[string]any) string {
	v, ok := r["reason"]
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		s = string(b)
	}
	if len(s) > maxReason {
		s = s[:maxReason]
	}
	return s
}

func stringsField(r map[string]any, key string) ([]string, error) {
	v, ok := r[key]
	if !ok {
		return nil, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %q is %s, want array of strings", ErrInvalidResult, key, typeName(v))
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %q[%d] is %s, want string", ErrInvalidResult, key, i, typeName(e))
		}
		out[i] = s
	}
	return out, nil
}

func stringField(r map[string]any, key string) (string, error) {
	v, ok := r[key]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: %q is %s, want string", ErrInvalidResult, key, typeName(v))
	}
	return s, nil
}

// normalizeNumbers turns json.Number into float64 throughout a value.
func normalizeNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		return x.Float64()
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, err := normalizeNumbers(e)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, err := normalizeNumbers(e)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	}
	return v, nil
}

// typeName names a JSON-ish Go value the way a policy author thinks of it.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64, int:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
