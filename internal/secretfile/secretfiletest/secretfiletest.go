// Package secretfiletest writes secret files with an exact mode, for tests
// of the code that reads them through secretfile.
package secretfiletest

import (
	"io/fs"
	"os"
	"testing"
)

// Write writes content to path with exactly mode and returns path. The
// mode is set by Chmod: os.WriteFile's is filtered by the umask.
func Write(t testing.TB, path, content string, mode fs.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}
