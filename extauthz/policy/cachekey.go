package policy

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"net/url"
	"slices"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// appendKey writes the decision-cache key of a request: the parts of the
// request and identity that determine the input buildInput would build
// under r, without building it. Building the input cost as much as the
// rest of a cached Check. Equal keys mean equal pruned inputs
// (TestCacheKeyDeterminesInput), so a key may only ever be more specific
// than the input — a raw query stands for the parsed_query it parses to.
// ok is false when the key cannot be written (the path does not decode);
// the request then goes the uncached way, which reports the error.
func appendKey(b []byte, req *authv3.CheckRequest, id *identity.Identity, r *reads, cfg *inputConfig) ([]byte, bool) {
	if r.all {
		return b, false // never cacheable (see reads.cacheable)
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	ok := true
	for _, k := range r.sortedKeys() {
		c := r.keys[k]
		b = appendString(b, k)
		switch k {
		case "attributes":
			b = appendMessage(b, req.GetAttributes().ProtoReflect(), c)
		case "parsed_path":
			rawPath, _, _ := strings.Cut(h.GetPath(), "?")
			decoded, err := url.PathUnescape(rawPath)
			if err != nil {
				ok = false
			}
			b = appendString(b, decoded)
		case "parsed_query":
			_, rawQuery, _ := strings.Cut(h.GetPath(), "?")
			b = appendString(b, rawQuery)
		case "parsed_body", "truncated_body":
			// Everything parseBody reads.
			b = appendBool(b, cfg.skipBodyParse)
			b = binary.AppendUvarint(b, uint64(cfg.maxBodyBytes))
			hs := h.GetHeaders()
			for _, name := range []string{"x-envoy-auth-partial-body", "content-type", "content-length"} {
				v, present := hs[name]
				b = appendBool(b, present)
				b = appendString(b, v)
			}
			b = appendString(b, h.GetBody())
			b = appendString(b, string(h.GetRawBody()))
		case "source_principal":
			b = appendString(b, req.GetAttributes().GetSource().GetPrincipal())
		case "identity":
			b = appendBool(b, id != nil)
			if id != nil {
				b = appendIdentity(b, id, c)
			}
		case "on_behalf_of":
			b = appendBool(b, cfg.onBehalfOf != nil)
			if cfg.onBehalfOf != nil {
				b = appendJSON(b, cfg.onBehalfOf, c)
			}
		default:
			// version is constant; other keys are never in the input.
		}
	}
	return b, ok
}

// appendMessage writes the fields of m under r. A whole subtree is the
// message's deterministic wire encoding, which fixes its protojson form.
func appendMessage(b []byte, m protoreflect.Message, r *reads) []byte {
	if !m.IsValid() {
		return append(b, 0)
	}
	b = append(b, 1)
	if r.all || m.Descriptor().ParentFile().Package() == "google.protobuf" {
		// messageValue builds well-known types (Struct, Timestamp…) whole.
		return appendWire(b, m.Interface())
	}
	if hr, ok := m.Interface().(*authv3.AttributeContext_HttpRequest); ok {
		return appendHTTPRequest(b, hr, r)
	}
	fields := m.Descriptor().Fields()
	for _, k := range r.sortedKeys() {
		fd := fields.ByJSONName(k)
		if fd == nil || !m.Has(fd) {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		c := r.keys[k]
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			b = appendMap(b, fd, v.Map(), c)
		case fd.IsList():
			l := v.List()
			b = binary.AppendUvarint(b, uint64(l.Len()))
			for i := range l.Len() {
				b = appendScalar(b, fd, l.Get(i), readsAll)
			}
		default:
			b = appendScalar(b, fd, v, c)
		}
	}
	return b
}

func appendMap(b []byte, fd protoreflect.FieldDescriptor, mv protoreflect.Map, r *reads) []byte {
	vd := fd.MapValue()
	if r.all || fd.MapKey().Kind() != protoreflect.StringKind {
		keys := make([]protoreflect.MapKey, 0, mv.Len())
		mv.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
			keys = append(keys, k)
			return true
		})
		slices.SortFunc(keys, func(x, y protoreflect.MapKey) int { return strings.Compare(x.String(), y.String()) })
		b = binary.AppendUvarint(b, uint64(len(keys)))
		for _, k := range keys {
			b = appendString(b, k.String())
			b = appendScalar(b, vd, mv.Get(k), readsAll)
		}
		return b
	}
	for _, k := range r.sortedKeys() {
		v := mv.Get(protoreflect.ValueOfString(k).MapKey())
		if !v.IsValid() {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = appendScalar(b, vd, v, r.keys[k])
	}
	return b
}

func appendScalar(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value, r *reads) []byte {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendMessage(b, v.Message(), r)
	case protoreflect.StringKind:
		return appendString(b, v.String())
	case protoreflect.BytesKind:
		return appendString(b, string(v.Bytes()))
	case protoreflect.BoolKind:
		return appendBool(b, v.Bool())
	case protoreflect.EnumKind:
		return binary.AppendVarint(b, int64(v.Enum()))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(v.Float()))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return binary.AppendUvarint(b, v.Uint())
	default: // the signed integer kinds
		return binary.AppendVarint(b, v.Int())
	}
}

func appendHTTPRequest(b []byte, h *authv3.AttributeContext_HttpRequest, r *reads) []byte {
	for _, k := range r.sortedKeys() {
		c := r.keys[k]
		switch k {
		case "id":
			b = appendString(b, h.GetId())
		case "method":
			b = appendString(b, h.GetMethod())
		case "headers":
			hs := h.GetHeaders()
			if c.all {
				names := make([]string, 0, len(hs))
				for name := range hs {
					names = append(names, name)
				}
				slices.Sort(names)
				b = binary.AppendUvarint(b, uint64(len(names)))
				for _, name := range names {
					b = appendString(b, name)
					b = appendString(b, hs[name])
				}
				continue
			}
			for _, name := range c.sortedKeys() {
				v, present := hs[name]
				b = appendBool(b, present)
				b = appendString(b, v)
			}
		case "headerMap":
			b = appendMessage(b, h.GetHeaderMap().ProtoReflect(), c)
		case "path":
			b = appendString(b, h.GetPath())
		case "host":
			b = appendString(b, h.GetHost())
		case "scheme":
			b = appendString(b, h.GetScheme())
		case "query":
			b = appendString(b, h.GetQuery())
		case "fragment":
			b = appendString(b, h.GetFragment())
		case "size":
			b = binary.AppendVarint(b, h.GetSize())
		case "protocol":
			b = appendString(b, h.GetProtocol())
		case "body":
			b = appendString(b, httpBody(h))
		case "rawBody":
			b = appendString(b, string(h.GetRawBody()))
		}
	}
	return b
}

func appendIdentity(b []byte, id *identity.Identity, r *reads) []byte {
	keys := r.sortedKeys()
	if r.all {
		keys = identityKeys
	}
	for _, k := range keys {
		c := r.child(k)
		switch k {
		case "kind":
			b = appendString(b, string(id.Kind))
		case "subject":
			b = appendString(b, id.Subject)
		case "issuer":
			b = appendString(b, id.Issuer)
		case "verified_by":
			b = appendString(b, string(id.Method))
		case "email":
			b = appendString(b, id.Email)
		case "roles":
			b = appendStrings(b, id.Roles)
		case "groups":
			b = appendStrings(b, id.Groups)
		case "spiffe_id":
			b = appendString(b, id.SPIFFEID)
		case "claims":
			b = appendJSON(b, id.Claims, c)
		case "peer":
			b = appendBool(b, id.Peer != nil)
			if p := id.Peer; p != nil {
				for _, s := range []string{p.Principal, p.SPIFFEID, p.Subject, p.Issuer, p.SHA256Fingerprint, p.Serial} {
					b = appendString(b, s)
				}
				b = appendStrings(b, p.URISANs)
				b = appendStrings(b, p.DNSSANs)
				b = binary.AppendVarint(b, p.NotAfter.UnixNano())
				b = appendBool(b, p.NotAfter.IsZero())
			}
		}
	}
	return b
}

// identityKeys are every key of input.identity (identityValue), for a
// policy that reads it whole.
var identityKeys = []string{"claims", "email", "groups", "issuer", "kind", "peer", "roles", "spiffe_id", "subject", "verified_by"}

// appendJSON writes the decoded JSON value v (claims, on_behalf_of) limited
// to the object keys in r; encoding/json sorts map keys, so the encoding is
// canonical.
func appendJSON(b []byte, v map[string]any, r *reads) []byte {
	if !r.all {
		sub := make(map[string]any, len(r.keys))
		for _, k := range r.sortedKeys() {
			if x, ok := v[k]; ok {
				sub[k] = x
			}
		}
		v = sub
	}
	j, err := json.Marshal(v)
	if err != nil {
		// Not JSON (a value built in code): a key no input can share.
		return appendString(b, "\x00unencodable")
	}
	return appendString(b, string(j))
}

func appendWire(b []byte, m proto.Message) []byte {
	w, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return appendString(b, "\x00unencodable")
	}
	return appendString(b, string(w))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}
