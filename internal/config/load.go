package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// MaxFileBytes bounds a config file; anything larger is a mistake.
const MaxFileBytes = 4 << 20

// Problems collects validation findings against field paths.
type Problems struct{ list []problem }

type problem struct{ field, msg string }

// Addf records a problem with the field at path.
func (p *Problems) Addf(path, format string, args ...any) {
	p.list = append(p.list, problem{path, fmt.Sprintf(format, args...)})
}

// Len reports how many problems were recorded.
func (p *Problems) Len() int { return len(p.list) }

// Validator is implemented by every config document type; Validate records
// every problem it finds rather than stopping at the first.
type Validator interface {
	Validate(p *Problems)
}

// PathResolver is implemented by documents that name other files; Load
// makes their relative paths relative to the document's own directory, so
// a config means the same wherever the process was started.
type PathResolver interface {
	ResolvePaths(baseDir string)
}

// Load reads path, decodes it strictly into a new T (unknown keys are
// errors) and validates it. Every error names the file and, where the file
// allows, the line.
func Load[T any, PT interface {
	*T
	Validator
}](path string) (*T, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	out, err := Parse[T, PT](path, data)
	if err != nil {
		return nil, err
	}
	if r, ok := any(PT(out)).(PathResolver); ok {
		r.ResolvePaths(filepath.Dir(path))
	}
	return out, nil
}

// Parse is Load for bytes already read; name is used in error messages.
func Parse[T any, PT interface {
	*T
	Validator
}](name string, data []byte) (*T, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	out := new(T)
	if len(root.Content) == 0 {
		return nil, &Error{File: name, Msg: "file is empty"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Line: extra.Line, Msg: "only one YAML document is allowed"}
	}
	var probs Problems
	PT(out).Validate(&probs)
	if probs.Len() > 0 {
		pos := indexPositions(&root)
		errs := make(Errors, 0, probs.Len())
		for _, pr := range probs.list {
			at := pos.Lookup(pr.field)
			errs = append(errs, &Error{File: name, Line: at.Line, Col: at.Col, Field: pr.field, Msg: pr.msg})
		}
		return nil, errs
	}
	return out, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, &Error{File: path, Msg: fmt.Sprintf("larger than %d bytes", MaxFileBytes)}
	}
	return data, nil
}

var yamlLine = regexp.MustCompile(`line (\d+): (.*)`)

// yamlError turns the YAML library's messages ("yaml: unmarshal errors:\n
// line 4: field foo not found in type config.Authz") into located Errors.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var errs Errors
	for _, m := range msgs {
		e := &Error{File: name, Msg: m}
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			e.Line, _ = strconv.Atoi(sm[1])
			e.Msg = sm[2]
		}
		errs = append(errs, e)
	}
	return errs
}
