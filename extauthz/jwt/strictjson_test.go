package jwt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// The token-stream decoder decodeStrictObject replaced, kept as the oracle
// the fast one is held to (FuzzDecodeStrictObject).

func referenceDecode(data []byte) (map[string]any, error) {
	if !utf8.Valid(data) {
		return nil, fail(ReasonMalformed, "JSON is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fail(ReasonMalformed, "JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fail(ReasonMalformed, "JSON is not an object")
	}
	obj, err := refObject(dec, 1)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fail(ReasonMalformed, "trailing data after JSON object")
	}
	return obj, nil
}

func refObject(dec *json.Decoder, depth int) (map[string]any, error) {
	if depth > maxJSONDepth {
		return nil, fail(ReasonMalformed, "JSON nested deeper than %d", maxJSONDepth)
	}
	obj := make(map[string]any)
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, fail(ReasonMalformed, "JSON: %w", err)
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return obj, nil
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fail(ReasonMalformed, "JSON object key is not a string")
		}
		if _, dup := obj[key]; dup {
			// The name is attacker-chosen: do not echo it.
			return nil, fail(ReasonDuplicateKey, "JSON object repeats a member name")
		}
		vtok, err := dec.Token()
		if err != nil {
			return nil, fail(ReasonMalformed, "JSON: %w", err)
		}
		v, err := refValue(dec, vtok, depth)
		if err != nil {
			return nil, err
		}
		obj[key] = v
	}
}

func refArray(dec *json.Decoder, depth int) ([]any, error) {
	if depth > maxJSONDepth {
		return nil, fail(ReasonMalformed, "JSON nested deeper than %d", maxJSONDepth)
	}
	arr := []any{}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, fail(ReasonMalformed, "JSON: %w", err)
		}
		if d, ok := tok.(json.Delim); ok && d == ']' {
			return arr, nil
		}
		v, err := refValue(dec, tok, depth)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
}

func refValue(dec *json.Decoder, tok json.Token, depth int) (any, error) {
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return refObject(dec, depth+1)
		case '[':
			return refArray(dec, depth+1)
		}
		return nil, fail(ReasonMalformed, "JSON: unexpected %v", t)
	case string, json.Number, bool, nil:
		return t, nil
	default:
		return nil, fail(ReasonMalformed, "JSON: unexpected token")
	}
}

func TestDecodeStrictObject(t *testing.T) {
	deep := strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth)
	tooDeep := strings.Repeat(`{"a":`, maxJSONDepth+1) + "1" + strings.Repeat("}", maxJSONDepth+1)
	deepArr := `{"a":` + strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth) + "}"
	var many strings.Builder
	many.WriteString("{")
	for i := range 40 {
		if i > 0 {
			many.WriteString(",")
		}
		fmt.Fprintf(&many, `"k%d":1`, i)
	}
	manyDup := many.String() + `,"k0":2}`
	tests := []struct {
		name, in string
		reason   Reason // "" = accepted
	}{
		{"plain", `{"sub":"a","n":12345678901234567890,"x":[1,{"y":null}],"b":true}`, ""},
		{"whitespace", " \n{ \"a\" : [ ] , \"b\" : { } }\t", ""},
		{"duplicate", `{"a":1,"a":2}`, ReasonDuplicateKey},
		{"duplicate after escape", `{"a":1,"\u0061":2}`, ReasonDuplicateKey},
		{"duplicate nested", `{"a":{"b":1,"b":1}}`, ReasonDuplicateKey},
		{"duplicate in array member", `{"a":[{"b":1},{"c":1,"c":2}]}`, ReasonDuplicateKey},
		{"same name in sibling objects", `{"a":{"b":1},"c":{"b":1}}`, ""},
		{"duplicate past 16 names", manyDup, ReasonDuplicateKey},
		{"40 distinct names", many.String() + "}", ""},
		{"depth limit", deep, ""},
		{"too deep", tooDeep, ReasonMalformed},
		{"array depth limit", deepArr, ReasonMalformed},
		{"not an object", `[1]`, ReasonMalformed},
		{"null", `null`, ReasonMalformed},
		{"trailing data", `{"a":1}{}`, ReasonMalformed},
		{"trailing garbage", `{"a":1} x`, ReasonMalformed},
		{"invalid utf-8", "{\"a\":\"\xff\"}", ReasonMalformed},
		{"bad escape", `{"a":"\x"}`, ReasonMalformed},
		{"missing value", `{"a":}`, ReasonMalformed},
		{"missing colon", `{"a" 1}`, ReasonMalformed},
		{"unterminated", `{"a":"b`, ReasonMalformed},
		{"leading comma", `{,"a":1}`, ReasonMalformed},
		{"empty", ``, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeStrictObject([]byte(tt.in))
			var e *Error
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.reason != "" && (!errors.As(err, &e) || e.Reason != tt.reason):
				t.Fatalf("got %v, want reason %s", err, tt.reason)
			}
			ref, rerr := referenceDecode([]byte(tt.in))
			if (err == nil) != (rerr == nil) || !reflect.DeepEqual(got, ref) {
				t.Fatalf("differs from the reference decoder: %v %v / %v %v", got, err, ref, rerr)
			}
		})
	}
}

// FuzzDecodeStrictObject holds the scanning decoder to the token-stream one:
// the same values, and refusals with the same reason.
func FuzzDecodeStrictObject(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":[1,2,{"c":"\u0063"}]}}`, `{"a":"\u0061","\u0061":1}`, `[]`, `{"a":1}x`, `{"a":[}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeStrictObject(data)
		ref, rerr := referenceDecode(data)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("%q: error %v, reference %v", data, err, rerr)
		}
		if err == nil && !reflect.DeepEqual(got, ref) {
			t.Fatalf("%q: %v, reference %v", data, got, ref)
		}
		var e, re *Error
		if err != nil && errors.As(err, &e) && errors.As(rerr, &re) && e.Reason != re.Reason {
			// Both refuse; a repeated name inside otherwise broken JSON may
			// be found by one before the other finds the syntax error.
			if e.Reason != ReasonDuplicateKey && re.Reason != ReasonDuplicateKey {
				t.Fatalf("%q: reason %s, reference %s", data, e.Reason, re.Reason)
			}
		}
	})
}

// BenchmarkDecodeStrictObject compares the scanning decoder with the
// token-stream one on a typical claim set.
func BenchmarkDecodeStrictObject(b *testing.B) {
	claims := []byte(`{"iss":"https://idp.example.com","sub":"user-1234","aud":"gatehouse","email":"user-1234@example.com","iat":1700000000,"nbf":1699999995,"exp":1700003600,"roles":["reader"],"groups":["staff","eu-west"],"name":"Bench User user-1234","jti":"jti-1234"}`)
	for _, c := range []struct {
		name string
		f    func([]byte) (map[string]any, error)
	}{{"scan+decode", decodeStrictObject}, {"token-stream", referenceDecode}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.f(claims); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
