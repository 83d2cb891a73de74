// Package testkit holds the small waiting and fetching helpers tests of
// running processes share (test/e2e, test/docs, cmd/gatehouse).
package testkit

import (
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// RepoRoot is the repository's root directory, found from this file's
// place in it (test/testkit), whatever package's test asks.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testkit: cannot locate the repository")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Eventually polls cond until it returns nil, failing the test with what
// and the last error after 30 s. The deadline only bounds a failure; it
// asserts nothing about speed.
func Eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Get returns the body of a GET of url, failing the test on any error.
func Get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
