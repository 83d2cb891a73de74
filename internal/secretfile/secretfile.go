// Package secretfile reads the small files config names for secrets (an
// OIDC client secret, cookie keys, the Redis password). It refuses a file
// that others may read or that its group may change, anything but a regular
// file, an empty file and one larger than MaxSize, so a secret left
// world-readable or a path pointing at the wrong thing fails at start with
// the path and the fix, not later in an incident.
package secretfile

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxSize bounds a secret file: secrets are a few hundred bytes at most, and
// the bound keeps a path pointing at a device or a huge file from
// exhausting memory.
const MaxSize = 64 << 10

// refused are the permission bits a secret file must not have: any bit for
// others, group write or execute. Group read stays allowed because
// Kubernetes with an fsGroup mounts a Secret asked as 0400 as 0440.
const refused fs.FileMode = 0o037

// Read returns the contents of the secret file at path, untrimmed: callers
// keep their own trimming. Symlinks are followed (Kubernetes mounts Secret
// keys as symlinks into ..data/); the file they reach must be a regular
// file with no permission for others and no group write or execute, hold
// something other than whitespace, and be at most MaxSize bytes. Errors
// name path.
func Read(path string) ([]byte, error) {
	// Stat before opening: opening a FIFO would block.
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if err := check(path, st); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	// Check what was opened too: the path may have been replaced since.
	if st, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if err := check(path, st); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("secret file %s is larger than %d bytes; is this the right file?", path, MaxSize)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("secret file %s is empty", path)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("secret file %s holds only whitespace", path)
	}
	return b, nil
}

// check refuses what a secret must not be: not a regular file, or open to
// others or writable by group.
func check(path string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("secret file %s is not a regular file (mode %s)", path, st.Mode())
	}
	if perm := st.Mode().Perm(); perm&refused != 0 {
		return fmt.Errorf("secret file %s has mode %04o: it must not be accessible to others nor writable by group; want 0600 or 0400 (chmod 600 %s)", path, perm, path)
	}
	return nil
}
