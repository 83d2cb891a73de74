package policy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// DefaultMaxBodyBytes bounds the request body BuildInput will parse into
// input.parsed_body; bigger bodies are reported as truncated instead, so a
// client cannot make every authorization decision pay for a huge JSON parse.
const DefaultMaxBodyBytes = 1 << 20

// InputOption tunes BuildInput.
type InputOption func(*inputConfig)

type inputConfig struct {
	maxBodyBytes  int
	skipBodyParse bool
	onBehalfOf    map[string]any
}

// WithOnBehalfOf adds input.on_behalf_of: the user a service acts for, as
// verified from a propagated Gatehouse assertion (extauthz/assertion).
func WithOnBehalfOf(doc map[string]any) InputOption {
	return func(c *inputConfig) { c.onBehalfOf = doc }
}

// WithMaxBodyBytes sets the largest body parsed into input.parsed_body
// (default DefaultMaxBodyBytes). Larger bodies yield parsed_body null and
// truncated_body true.
func WithMaxBodyBytes(n int) InputOption {
	return func(c *inputConfig) { c.maxBodyBytes = n }
}

// WithSkipBodyParse leaves parsed_body and truncated_body out of the input,
// like opa-envoy-plugin's skip-request-body-parse.
func WithSkipBodyParse() InputOption {
	return func(c *inputConfig) { c.skipBodyParse = true }
}

// versionValue is input.version; opa-envoy-plugin sends the same object for
// v3 requests and policies sometimes branch on it.
var versionValue = ast.NewObject(
	[2]*ast.Term{ast.StringTerm("ext_authz"), ast.StringTerm("v3")},
	[2]*ast.Term{ast.StringTerm("encoding"), ast.StringTerm("protojson")},
)

// BuildInput turns an ext_authz CheckRequest and the identity established for
// it into the policy input document. The shape is opa-envoy-plugin's, so its
// users' policies run unchanged:
//
//   - attributes: the CheckRequest attributes in protojson form
//     (lowerCamelCase names, unset fields omitted, int64 as strings,
//     timestamps as RFC 3339 strings, enums by name, bytes as base64) —
//     what the plugin's "encoding": "protojson" promises; plugin releases
//     since early 2025 build this by reflection instead and differ only in
//     those non-string corner cases (e.g. attributes.request.time);
//   - parsed_path: the path before "?", percent-decoded, split on "/" after
//     trimming leading slashes ("/" gives [""]);
//   - parsed_query: the query as an object of string arrays;
//   - parsed_body, truncated_body: a JSON or form body when Envoy sent one;
//   - source_principal: attributes.source.principal, when set;
//   - version: {"ext_authz": "v3", "encoding": "protojson"}.
//
// Gatehouse adds input.identity (the JSON form of identity.Identity), absent
// when id is nil, i.e. the caller is anonymous.
//
// The value is built as OPA AST directly, without a JSON round trip (see
// BenchmarkInputAST). A path or query that cannot be decoded, or a JSON body
// that does not parse, is an error: the caller must deny.
func BuildInput(req *authv3.CheckRequest, id *identity.Identity, opts ...InputOption) (ast.Value, error) {
	cfg := newInputConfig(opts)
	return buildInput(req, id, readsAll, &cfg)
}

func newInputConfig(opts []InputOption) inputConfig {
	cfg := inputConfig{maxBodyBytes: DefaultMaxBodyBytes}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// buildInput is BuildInput limited to what a policy reads (see reads): keys
// outside r are left out. The request is checked whole either way — a path,
// query or body that cannot be decoded is an error even when the policy
// would not look at it, so pruning never turns a deny into an allow.
func buildInput(req *authv3.CheckRequest, id *identity.Identity, r *reads, cfg *inputConfig) (ast.Value, error) {
	if req == nil {
		return nil, errors.New("policy/input.go: nil CheckRequest")
	}

	obj, err := messageValue(req.ProtoReflect(), r)
	if err != nil {
		return nil, fmt.Errorf("policy/input.go: converting CheckRequest: %w", err)
	}
	input, ok := obj.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("policy/input.go: CheckRequest converted to %T, want object", obj)
	}

	httpReq := req.GetAttributes().GetRequest().GetHttp()
	parsedPath, parsedQuery, err := parsePathAndQuery(httpReq.GetPath(), r.child("parsed_path"), r.child("parsed_query"))
	if err != nil {
		// The path without its query: a query may carry a token.
		return nil, fmt.Errorf("policy/input.go: request path %q: %w", pathForLog(httpReq.GetPath()), err)
	}
	if parsedPath != nil {
		input.Insert(ast.InternedTerm("parsed_path"), ast.NewTerm(parsedPath))
	}
	if parsedQuery != nil {
		input.Insert(ast.InternedTerm("parsed_query"), ast.NewTerm(parsedQuery))
	}

	if !cfg.skipBodyParse {
		build := r.has("parsed_body")
		body, truncated, err := parseBody(httpReq.GetHeaders(), httpReq.GetBody(), httpReq.GetRawBody(), cfg.maxBodyBytes, build)
		if err != nil {
			return nil, fmt.Errorf("policy/input.go: request body: %w", err)
		}
		if build {
			input.Insert(ast.InternedTerm("parsed_body"), ast.NewTerm(body))
		}
		if r.has("truncated_body") {
			input.Insert(ast.InternedTerm("truncated_body"), ast.InternedTerm(truncated))
		}
	}

	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" && r.has("source_principal") {
		input.Insert(ast.InternedTerm("source_principal"), ast.StringTerm(p))
	}
	if r.has("version") {
		input.Insert(ast.InternedTerm("version"), ast.NewTerm(versionValue))
	}

	if ir := r.child("identity"); id != nil && ir != nil {
		idv, err := identityValue(id, ir)
		if err != nil {
			return nil, fmt.Errorf("policy/input.go: identity: %w", err)
		}
		input.Insert(ast.InternedTerm("identity"), ast.NewTerm(idv))
	}
	if or := r.child("on_behalf_of"); cfg.onBehalfOf != nil && or != nil {
		v, err := jsonValue(cfg.onBehalfOf, or)
		if err != nil {
			return nil, fmt.Errorf("policy/input.go: on_behalf_of: %w", err)
		}
		input.Insert(ast.InternedTerm("on_behalf_of"), ast.NewTerm(v))
	}
	return input, nil
}

// identityValue builds input.identity directly as AST, field for field
// what identity.Identity's JSON tags say (TestIdentityValueMatchesJSON holds
// the two together): a JSON round trip here cost more than evaluating the
// policy. Only the keys in r are built.
func identityValue(id *identity.Identity, r *reads) (ast.Value, error) {
	obj := ast.NewObjectWithCapacity(r.capacity(10))
	put := func(k string, v ast.Value) { obj.Insert(ast.InternedTerm(k), ast.NewTerm(v)) }
	putStr := func(k, v string, omitEmpty bool) {
		if (v != "" || !omitEmpty) && r.has(k) {
			put(k, ast.String(v))
		}
	}
	putStr("kind", string(id.Kind), false)
	putStr("subject", id.Subject, false)
	putStr("issuer", id.Issuer, true)
	putStr("verified_by", string(id.Method), false)
	putStr("email", id.Email, true)
	if len(id.Roles) > 0 && r.has("roles") {
		put("roles", stringArray(id.Roles))
	}
	if len(id.Groups) > 0 && r.has("groups") {
		put("groups", stringArray(id.Groups))
	}
	putStr("spiffe_id", id.SPIFFEID, true)
	if cr := r.child("claims"); len(id.Claims) > 0 && cr != nil {
		v, err := jsonValue(id.Claims, cr)
		if err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		put("claims", v)
	}
	if pr := r.child("peer"); id.Peer != nil && pr != nil {
		p := id.Peer
		po := ast.NewObjectWithCapacity(pr.capacity(9))
		ps := func(k, v string) {
			if v != "" && pr.has(k) {
				po.Insert(ast.InternedTerm(k), ast.StringTerm(v))
			}
		}
		ps("principal", p.Principal)
		ps("spiffe_id", p.SPIFFEID)
		ps("subject", p.Subject)
		ps("issuer", p.Issuer)
		if len(p.URISANs) > 0 && pr.has("uri_sans") {
			po.Insert(ast.InternedTerm("uri_sans"), ast.NewTerm(stringArray(p.URISANs)))
		}
		if len(p.DNSSANs) > 0 && pr.has("dns_sans") {
			po.Insert(ast.InternedTerm("dns_sans"), ast.NewTerm(stringArray(p.DNSSANs)))
		}
		ps("sha256_fingerprint", p.SHA256Fingerprint)
		ps("serial", p.Serial)
		if !p.NotAfter.IsZero() && pr.has("not_after") {
			ps("not_after", p.NotAfter.Format(time.RFC3339Nano))
		}
		put("peer", po)
	}
	return obj, nil
}

// jsonValue converts a decoded JSON value (claims: maps, slices, strings,
// json.Number or float64, bools, nil) to AST.
func jsonValue(v any, r *reads) (ast.Value, error) {
	switch x := v.(type) {
	case nil:
		return ast.NullValue, nil
	case string:
		return ast.String(x), nil
	case bool:
		return ast.Boolean(x), nil
	case json.Number:
		return ast.Number(x), nil
	case float64:
		return floatValue(x, 64), nil
	case map[string]any:
		obj := ast.NewObjectWithCapacity(len(x))
		for k, e := range x {
			kr := r.child(k)
			if kr == nil {
				continue
			}
			ev, err := jsonValue(e, kr)
			if err != nil {
				return nil, err
			}
			obj.Insert(ast.StringTerm(k), ast.NewTerm(ev))
		}
		return obj, nil
	case []any:
		terms := make([]*ast.Term, len(x))
		for i, e := range x {
			ev, err := jsonValue(e, readsAll) // arrays are indexed by number: all or nothing
			if err != nil {
				return nil, err
			}
			terms[i] = ast.NewTerm(ev)
		}
		return ast.NewArray(terms...), nil
	default:
		// Anything else (a claim set built in code): the generic path.
		return ast.InterfaceToValue(x)
	}
}

// httpBody is the request body as the string policies read at
// attributes.request.http.body. Envoy sends it as raw_body when its
// with_request_body has pack_as_bytes (Gatehouse's translation sets it: a
// binary body in the string field fails the whole Check, since a proto3
// string must be UTF-8); a raw body that is UTF-8 text is shown here too,
// so policies written for the string field keep working.
func httpBody(h *authv3.AttributeContext_HttpRequest) string {
	if b := h.GetBody(); b != "" {
		return b
	}
	if raw := h.GetRawBody(); len(raw) > 0 && utf8.Valid(raw) {
		return string(raw)
	}
	return ""
}

// pathForLog is path without its query string, at most 256 bytes: what
// the decision log shows of a path.
func pathForLog(path string) string {
	path, _, _ = strings.Cut(path, "?")
	if len(path) > 256 {
		path = path[:256] + "…"
	}
	return path
}

// decodable runs the checks buildInput makes whatever the policy reads (a
// path, query or body that does not decode is a deny) without building
// anything, for requests answered from the decision cache: the cache key
// holds only what the policy reads, so it cannot tell a malformed request
// from a good one.
func decodable(req *authv3.CheckRequest, cfg *inputConfig) error {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if _, _, err := parsePathAndQuery(httpReq.GetPath(), nil, nil); err != nil {
		return err
	}
	if !cfg.skipBodyParse {
		if _, _, err := parseBody(httpReq.GetHeaders(), httpReq.GetBody(), httpReq.GetRawBody(), cfg.maxBodyBytes, false); err != nil {
			return err
		}
	}
	return nil
}

// parsePathAndQuery mirrors opa-envoy-plugin: the whole path part is
// percent-decoded first (so "%2F" becomes a separator and "%2e%2e" a ".."
// segment, which policies must reject), then split on "/". Both parts are
// always decoded, so a bad one is an error; the values are built only when
// pr (parsed_path) or qr (parsed_query) asks for them, else nil.
func parsePathAndQuery(path string, pr, qr *reads) (*ast.Array, ast.Object, error) {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, nil, err
	}
	var parsedPath *ast.Array
	if pr != nil {
		segs := strings.Split(strings.TrimLeft(decoded, "/"), "/")
		terms := make([]*ast.Term, len(segs))
		for i, s := range segs {
			terms[i] = ast.StringTerm(s)
		}
		parsedPath = ast.NewArray(terms...)
	}

	// url.ParseQuery rejects ";" separators and bad escapes; like the plugin
	// we treat that as an error rather than guess what the upstream sees.
	if rawQuery == "" {
		if qr == nil {
			return parsedPath, nil, nil
		}
		return parsedPath, ast.NewObject(), nil
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, nil, err
	}
	if qr == nil {
		return parsedPath, nil, nil
	}
	return parsedPath, valuesObject(q, qr), nil
}

// valuesObject is a query or form as an object of string arrays, limited
// to the keys in r.
func valuesObject(q url.Values, r *reads) ast.Object {
	obj := ast.NewObjectWithCapacity(len(q))
	for k, vs := range q {
		if r.has(k) {
			obj.Insert(ast.StringTerm(k), ast.NewTerm(stringArray(vs)))
		}
	}
	return obj
}

func stringArray(ss []string) *ast.Array {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.NewArray(terms...)
}

// parseBody follows opa-envoy-plugin for JSON and form bodies: Envoy's
// x-envoy-auth-partial-body header or a content-length larger than what was
// sent mark the body truncated, and a truncated body is never parsed. Other
// content types (multipart, gRPC) give parsed_body null. Without build the
// body is only checked (the same errors), and the value is null.
func parseBody(headers map[string]string, body string, raw []byte, maxBytes int, build bool) (ast.Value, bool, error) {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return ast.NullValue, true, nil
	}
	ct := headers["content-type"]
	isJSON := strings.Contains(ct, "application/json")
	isForm := strings.Contains(ct, "application/x-www-form-urlencoded")
	if !isJSON && !isForm {
		return ast.NullValue, false, nil
	}
	if body == "" {
		body = string(raw)
	}
	if body == "" {
		return ast.NullValue, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("content-length %q: %w", cl, err)
		}
		if n > int64(len(body)) {
			return ast.NullValue, true, nil
		}
	}
	if len(body) > maxBytes {
		return ast.NullValue, true, nil
	}
	if isForm {
		q, err := url.ParseQuery(body)
		if err != nil {
			return nil, false, err
		}
		if !build {
			return ast.NullValue, false, nil
		}
		return valuesObject(q, readsAll), false, nil
	}
	// One JSON value and nothing after it, whether or not the policy reads
	// it (ValueFromReader alone stops after the first value): the answer
	// must not depend on what the policy reads.
	if !json.Valid([]byte(body)) {
		return nil, false, errors.New("invalid JSON body")
	}
	if !build {
		return ast.NullValue, false, nil
	}
	v, err := ast.ValueFromReader(strings.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	return v, false, nil
}

// messageValue converts a message to the AST of its protojson encoding
// (default options) without producing JSON text, limited to the fields in r
// (by JSON name).
func messageValue(m protoreflect.Message, r *reads) (ast.Value, error) {
	if h, ok := m.Interface().(*authv3.AttributeContext_HttpRequest); ok {
		return httpRequestValue(h, r)
	}
	desc := m.Descriptor()
	switch desc.FullName() {
	case "google.protobuf.Struct":
		return structValue(m)
	case "google.protobuf.Value":
		return protoValueValue(m)
	case "google.protobuf.ListValue":
		return listValueValue(m)
	case "google.protobuf.Timestamp":
		return timestampValue(m)
	}
	if desc.ParentFile().Package() == "google.protobuf" {
		// Any, Duration, wrappers, FieldMask…: rare in a CheckRequest, so let
		// protojson do the exact encoding.
		b, err := protojson.Marshal(m.Interface())
		if err != nil {
			return nil, err
		}
		return ast.ValueFromReader(bytes.NewReader(b))
	}

	obj := ast.NewObjectWithCapacity(r.capacity(desc.Fields().Len()))
	field := func(fd protoreflect.FieldDescriptor, v protoreflect.Value, fr *reads) error {
		var val ast.Value
		var err error
		switch {
		case fd.IsMap():
			val, err = mapValue(fd, v.Map(), fr)
		case fd.IsList():
			val, err = listValue(fd, v.List())
		default:
			val, err = singularValue(fd, v, fr)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", fd.FullName(), err)
		}
		obj.Insert(ast.StringTerm(fd.JSONName()), ast.NewTerm(val))
		return nil
	}
	if !r.all {
		// Only the fields asked for, looked up by name.
		for k, fr := range r.keys {
			fd := desc.Fields().ByJSONName(k)
			if fd == nil || !m.Has(fd) {
				continue
			}
			if err := field(fd, m.Get(fd), fr); err != nil {
				return nil, err
			}
		}
		return obj, nil
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		err = field(fd, v, r)
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// httpRequestValue is messageValue for the message that carries almost all
// of a request's bytes, written out field by field: reflecting over the
// header map was a quarter of a Check. Every field of HttpRequest is here
// (TestBuildInputMatchesProtojson keeps it equal to protojson).
func httpRequestValue(h *authv3.AttributeContext_HttpRequest, r *reads) (ast.Value, error) {
	obj := ast.NewObjectWithCapacity(r.capacity(13))
	str := func(k, v string) {
		if v != "" && r.has(k) {
			obj.Insert(ast.InternedTerm(k), ast.StringTerm(v))
		}
	}
	str("id", h.GetId())
	str("method", h.GetMethod())
	if hr := r.child("headers"); len(h.GetHeaders()) > 0 && hr != nil {
		hs := h.GetHeaders()
		ho := ast.NewObjectWithCapacity(hr.capacity(len(hs)))
		if hr.all {
			for k, v := range hs {
				ho.Insert(ast.StringTerm(k), ast.StringTerm(v))
			}
		} else {
			for k := range hr.keys {
				if v, ok := hs[k]; ok {
					ho.Insert(ast.StringTerm(k), ast.StringTerm(v))
				}
			}
		}
		obj.Insert(ast.InternedTerm("headers"), ast.NewTerm(ho))
	}
	if hm := h.GetHeaderMap(); hm != nil && r.has("headerMap") {
		v, err := messageValue(hm.ProtoReflect(), r.child("headerMap"))
		if err != nil {
			return nil, fmt.Errorf("header_map: %w", err)
		}
		obj.Insert(ast.InternedTerm("headerMap"), ast.NewTerm(v))
	}
	str("path", h.GetPath())
	str("host", h.GetHost())
	str("scheme", h.GetScheme())
	str("query", h.GetQuery())
	str("fragment", h.GetFragment())
	if n := h.GetSize(); n != 0 && r.has("size") {
		obj.Insert(ast.InternedTerm("size"), ast.StringTerm(strconv.FormatInt(n, 10)))
	}
	str("protocol", h.GetProtocol())
	str("body", httpBody(h))
	if b := h.GetRawBody(); len(b) > 0 && r.has("rawBody") {
		obj.Insert(ast.InternedTerm("rawBody"), ast.StringTerm(base64.StdEncoding.EncodeToString(b)))
	}
	return obj, nil
}

func mapValue(fd protoreflect.FieldDescriptor, mv protoreflect.Map, r *reads) (ast.Value, error) {
	obj := ast.NewObjectWithCapacity(r.capacity(mv.Len()))
	valDesc := fd.MapValue()
	var err error
	mv.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		kr := r.child(k.String())
		if kr == nil {
			return true
		}
		var val ast.Value
		if val, err = singularValue(valDesc, v, kr); err != nil {
			return false
		}
		obj.Insert(ast.StringTerm(k.String()), ast.NewTerm(val))
		return true
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func listValue(fd protoreflect.FieldDescriptor, l protoreflect.List) (ast.Value, error) {
	terms := make([]*ast.Term, l.Len())
	for i := range l.Len() {
		v, err := singularValue(fd, l.Get(i), readsAll) // indexed by number: all or nothing
		if err != nil {
			return nil, err
		}
		terms[i] = ast.NewTerm(v)
	}
	return ast.NewArray(terms...), nil
}

func singularValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, r *reads) (ast.Value, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool()), nil
	case protoreflect.StringKind:
		return ast.String(v.String()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.FloatKind:
		return floatValue(v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return floatValue(v.Float(), 64), nil
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes())), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return ast.NullValue, nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(ev.Name()), nil
		}
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10)), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message(), r)
	}
	return nil, fmt.Errorf("unsupported field kind %v", fd.Kind())
}

// floatValue encodes like protojson: non-finite numbers become strings.
func floatValue(f float64, bits int) ast.Value {
	switch {
	case math.IsNaN(f):
		return ast.String("NaN")
	case math.IsInf(f, 1):
		return ast.String("Infinity")
	case math.IsInf(f, -1):
		return ast.String("-Infinity")
	}
	return ast.Number(strconv.FormatFloat(f, 'g', -1, bits))
}

func structValue(m protoreflect.Message) (ast.Value, error) {
	fd := m.Descriptor().Fields().ByName("fields")
	return mapValue(fd, m.Get(fd).Map(), readsAll)
}

func listValueValue(m protoreflect.Message) (ast.Value, error) {
	fd := m.Descriptor().Fields().ByName("values")
	return listValue(fd, m.Get(fd).List())
}

func protoValueValue(m protoreflect.Message) (ast.Value, error) {
	od := m.Descriptor().Oneofs().ByName("kind")
	fd := m.WhichOneof(od)
	if fd == nil {
		return nil, errors.New("google.protobuf.Value with no kind set")
	}
	v := m.Get(fd)
	if fd.Kind() == protoreflect.DoubleKind {
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("google.protobuf.Value holds non-finite number %v", f)
		}
	}
	return singularValue(fd, v, readsAll)
}

// Timestamp bounds protojson accepts: years 0001 to 9999.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

func timestampValue(m protoreflect.Message) (ast.Value, error) {
	fields := m.Descriptor().Fields()
	secs := m.Get(fields.ByName("seconds")).Int()
	nanos := m.Get(fields.ByName("nanos")).Int()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999_999_999 {
		return nil, fmt.Errorf("invalid timestamp seconds=%d nanos=%d", secs, nanos)
	}
	// Same fraction trimming as protojson: 0, 3, 6 or 9 digits.
	s := time.Unix(secs, nanos).UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return ast.String(s + "Z"), nil
}
