// Package policies holds Gatehouse's example Rego policies and their tests.
// They are embedded in the binary so that `gatehouse serve` without a
// config can write them out on first start for the operator to edit.
package policies

import "embed"

// FS holds every .rego file and the README under this directory.
//
//go:embed README.md envoy
var FS embed.FS
