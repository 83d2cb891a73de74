// Package e2e runs the gatehouse binary as users run it — a separate
// process, configured by files — and talks to it only over its network
// interfaces.
package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/test/gatehousebin"

	"github.com/gatehouse-proxy/gatehouse/test/testkit"
)

// binary is the gatehouse binary built once for all tests in this package.
var binary string

func TestMain(m *testing.M) { gatehousebin.Main(m, &binary) }

// proc is a running gatehouse process.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout strings.Builder
	stderr strings.Builder
	addrs  chan []string
}

var listening = regexp.MustCompile(`on (\S+)`)

// start runs gatehouse with args and waits for its "listening" line on
// stdout, returning the addresses named there in order.
func start(t *testing.T, args ...string) (*proc, []string) {
	t.Helper()
	return startIn(t, "", args...)
}

// startIn is start with the process's working directory set to dir.
func startIn(t *testing.T, dir string, args ...string) (*proc, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cmd: exec.CommandContext(ctx, binary, args...), addrs: make(chan []string, 1)}
	p.cmd.Dir = dir
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(os.Interrupt) }
	p.cmd.WaitDelay = 10 * time.Second
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.stderr.Write(b)
	})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stdout.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.HasPrefix(line, "gatehouse ") && strings.Contains(line, " on ") {
				var addrs []string
				for _, m := range listening.FindAllStringSubmatch(line, -1) {
					addrs = append(addrs, strings.TrimSuffix(m[1], ","))
				}
				select {
				case p.addrs <- addrs:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		cancel()
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("gatehouse stderr:\n%s", p.logs())
		}
	})
	select {
	case addrs := <-p.addrs:
		return p, addrs
	case <-time.After(60 * time.Second):
		t.Fatalf("gatehouse did not start; stderr:\n%s", p.logs())
		return nil, nil
	}
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// eventually is testkit.Eventually.
func eventually(t *testing.T, what string, cond func() error) { testkit.Eventually(t, what, cond) }

// copyDir copies the regular files of src (recursively) into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// repoRoot is the repository root, two levels above this package.
// repoRoot is testkit.RepoRoot.
func repoRoot(t *testing.T) string { return testkit.RepoRoot(t) }
