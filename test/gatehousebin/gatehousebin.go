// Package gatehousebin builds the gatehouse binary for tests that run it as
// a separate process, the way users run it.
package gatehousebin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds gatehouse into a temporary directory, sets *path to it, runs
// the package's tests and exits; call it from TestMain.
func Main(m *testing.M, path *string) {
	dir, err := os.MkdirTemp("", "gatehouse-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*path = filepath.Join(dir, "gatehouse")
	build := exec.Command("go", "build", "-o", *path, "github.com/gatehouse-proxy/gatehouse/cmd/gatehouse")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gatehouse:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
