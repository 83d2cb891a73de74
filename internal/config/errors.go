package config

import (
	"strings"

	"github.com/gatehouse-proxy/gatehouse/internal/srcpos"
)

// Error is one problem in a config file, located as precisely as the file
// allows so an operator can jump straight to it.
type Error struct {
	File  string // path as given to Load
	Line  int    // 1-based; 0 when unknown
	Col   int    // 1-based; 0 when unknown
	Field string // dotted path, e.g. "mesh.routes[2].service"
	Msg   string
}

func (e *Error) Error() string {
	return srcpos.Message(e.File, e.Line, e.Col, e.Field, e.Msg)
}

// Errors collects every problem found in one file, so a single run of
// `gatehouse validate` reports them all.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Unwrap exposes each error to errors.As / errors.Is.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}
