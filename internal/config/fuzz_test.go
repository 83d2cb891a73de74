package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse: any bytes given as a config file are either a validated
// Config or an error that names the file — never a panic, never a config
// that Validate would reject. Seeds: the shipped examples and the YAML
// shapes that trip parsers (aliases, merge keys, tags, several documents,
// deep nesting).
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../examples/gatehouse.yaml", "../../examples/local.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		"---\n",
		"authz:\n  timeout: 1s\n",
		"authz: &a\n  timeout: 1s\nlog: *a\n",
		"a: &a [*a]\n",
		"x: &x [1,2]\ny: &y [*x,*x,*x,*x]\nz: [*y,*y,*y,*y]\n",
		"authz:\n  <<: {timeout: 1s}\n",
		"authz: !!binary aGVsbG8=\n",
		"authz:\n  timeout: 1s\n---\nauthz: {}\n",
		"mesh:\n  services:\n    - {name: a, endpoints: [\"a:1\"]}\n  edges:\n    - {name: e, routes: [{service: b}]}\n",
		strings.Repeat("[", 5000),
		"\xff\xfe\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse[Config]("fuzz.yaml", data)
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			var one *Error
			var many Errors
			if !errors.As(err, &one) && !errors.As(err, &many) {
				t.Fatalf("error %T is not located: %v", err, err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		var p Problems
		cfg.Validate(&p)
		if p.Len() != 0 {
			t.Fatalf("Parse returned a config Validate rejects: %+v", p)
		}
	})
}
