package jwt

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
)

// decodeStrictObject decodes one JSON object, rejecting what encoding/json
// silently tolerates: duplicate member names (it keeps the last, another
// parser may keep the first), invalid UTF-8 (it substitutes U+FFFD), trailing
// data, and nesting deeper than maxJSONDepth. Numbers stay json.Number so
// large integer claims keep their precision.
//
// A scan for nesting and repeated names runs first, on the raw bytes and
// without allocating; then one Decode builds the value. Walking
// encoding/json's token stream instead cost a quarter of verifying a fresh
// token.
func decodeStrictObject(data []byte) (map[string]any, error) {
	if !utf8.Valid(data) {
		return nil, fail(ReasonMalformed, "JSON is not valid UTF-8")
	}
	if err := checkMembers(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fail(ReasonMalformed, "JSON: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fail(ReasonMalformed, "JSON is not an object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fail(ReasonMalformed, "trailing data after JSON object")
	}
	return obj, nil
}

// checkMembers reports nesting deeper than maxJSONDepth and an object that
// repeats a member name (compared after unescaping, so "a" and "\u0061" are
// the same name). Other syntax errors stop the scan silently: the decoder
// that runs next reports them.
func checkMembers(data []byte) error {
	s := memberScan{data: data}
	err := s.value(0)
	if errors.Is(err, errSyntax) {
		return nil
	}
	return err
}

// errSyntax ends a scan at malformed input, left for the decoder to report.
var errSyntax = errors.New("syntax")

type memberScan struct {
	data []byte
	i    int
}

func (s *memberScan) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *memberScan) value(depth int) error {
	s.ws()
	if s.i >= len(s.data) {
		return errSyntax
	}
	switch s.data[s.i] {
	case '{':
		return s.object(depth + 1)
	case '[':
		return s.array(depth + 1)
	case '"':
		_, _, err := s.str()
		return err
	}
	// A number or literal: up to the next delimiter, and never empty, so
	// every step of the scan moves forward.
	start := s.i
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ',', ']', '}', ' ', '\t', '\n', '\r':
			if s.i == start {
				return errSyntax
			}
			return nil
		}
		s.i++
	}
	return nil
}

// str consumes a string and returns its raw contents and whether they hold
// an escape.
func (s *memberScan) str() ([]byte, bool, error) {
	start := s.i + 1
	escaped := false
	for j := start; j < len(s.data); j++ {
		switch s.data[j] {
		case '\\':
			escaped = true
			j++ // skip the escaped byte; \uXXXX's digits are plain bytes
		case '"':
			s.i = j + 1
			return s.data[start:j], escaped, nil
		}
	}
	return nil, false, errSyntax
}

func (s *memberScan) object(depth int) error {
	if depth > maxJSONDepth {
		return fail(ReasonMalformed, "JSON nested deeper than %d", maxJSONDepth)
	}
	s.i++ // {
	var small [16][]byte
	names := small[:0]
	var many map[string]struct{} // past len(small) names, compare by map
	for {
		s.ws()
		if s.i >= len(s.data) {
			return errSyntax
		}
		if s.data[s.i] == '}' {
			s.i++
			return nil
		}
		if s.data[s.i] == ',' && len(names)+len(many) > 0 {
			s.i++
			s.ws()
		}
		if s.i >= len(s.data) || s.data[s.i] != '"' {
			return errSyntax
		}
		raw, escaped, err := s.str()
		if err != nil {
			return err
		}
		name := raw
		if escaped {
			var u string
			if err := json.Unmarshal(s.data[s.i-len(raw)-2:s.i], &u); err != nil {
				return errSyntax
			}
			name = []byte(u)
		}
		if dup := s.seen(name, names, many); dup {
			// The name is attacker-chosen: do not echo it.
			return fail(ReasonDuplicateKey, "JSON object repeats a member name")
		}
		switch {
		case many != nil:
			many[string(name)] = struct{}{}
		case len(names) < len(small):
			names = append(names, name)
		default:
			many = make(map[string]struct{}, 2*len(small))
			for _, n := range names {
				many[string(n)] = struct{}{}
			}
			many[string(name)] = struct{}{}
		}
		s.ws()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return errSyntax
		}
		s.i++
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		if s.i < len(s.data) && s.data[s.i] != ',' && s.data[s.i] != '}' {
			return errSyntax
		}
	}
}

func (s *memberScan) seen(name []byte, names [][]byte, many map[string]struct{}) bool {
	if many != nil {
		_, ok := many[string(name)]
		return ok
	}
	for _, n := range names {
		if bytes.Equal(n, name) {
			return true
		}
	}
	return false
}

func (s *memberScan) array(depth int) error {
	if depth > maxJSONDepth {
		return fail(ReasonMalformed, "JSON nested deeper than %d", maxJSONDepth)
	}
	s.i++ // [
	for {
		s.ws()
		if s.i >= len(s.data) {
			return errSyntax
		}
		switch s.data[s.i] {
		case ']':
			s.i++
			return nil
		case ',':
			s.i++
			continue
		}
		if err := s.value(depth); err != nil {
			return err
		}
	}
}
