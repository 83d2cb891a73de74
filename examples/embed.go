// Package examples ships the example configurations. local.yaml is also
// embedded in the binary: it is what `gatehouse serve` runs with when no
// config file is given.
package examples

import _ "embed"

// Local is examples/local.yaml: everything on one machine, on loopback.
//
//go:embed local.yaml
var Local []byte
