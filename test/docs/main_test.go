// Package docs keeps what the READMEs tell users to copy working: the
// YAML config examples load and validate, every `gatehouse <command>
// --flag` they show exists, the commands of the install guides run as
// written (CA files, helm rendering, the Secret names kubectl creates),
// and every metric and admin endpoint of README › Operations is served.
// It needs neither Docker nor Envoy; helm is optional (looked up on PATH,
// then in .cache/bin).
package docs

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/test/gatehousebin"
	"github.com/gatehouse-proxy/gatehouse/test/testkit"
)

// binary is the gatehouse binary, built once for the package.
var binary string

func TestMain(m *testing.M) { gatehousebin.Main(m, &binary) }

// readmes are the files users learn Gatehouse from, relative to the root.
var readmes = []string{
	"README.md",
	"policies/README.md",
	"compose/README.md",
	"deploy/helm/gatehouse/README.md",
}

// repoRoot is testkit.RepoRoot.
func repoRoot(t *testing.T) string { return testkit.RepoRoot(t) }

// block is one fenced code block.
type block struct {
	file    string
	line    int // of the first line inside the fence
	lang    string
	heading string // the last heading above it
	text    string
}

func (b block) where() string { return b.file + ":" + strconv.Itoa(b.line) }

// span is one inline code span (it may wrap across lines; newlines are
// turned into spaces).
type span struct {
	file string
	line int
	text string
}

func (s span) where() string { return s.file + ":" + strconv.Itoa(s.line) }

type doc struct {
	file   string
	text   string
	blocks []block
	spans  []span
}

var inlineCode = regexp.MustCompile("`([^`]+)`")

// readDoc splits a README into fenced blocks and inline code spans.
func readDoc(t *testing.T, rel string) doc {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	d := doc{file: rel, text: string(raw)}
	lines := strings.Split(d.text, "\n")
	prose := make([]string, len(lines)) // code blocks blanked, line numbers kept
	heading := ""
	var cur *block
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "```") {
			if cur == nil {
				cur = &block{file: rel, line: i + 2, lang: strings.TrimPrefix(trimmed, "```"), heading: heading}
			} else {
				d.blocks = append(d.blocks, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.text += l + "\n"
			continue
		}
		if strings.HasPrefix(l, "#") {
			heading = strings.TrimSpace(strings.TrimLeft(l, "#"))
		}
		prose[i] = l
	}
	joined := strings.Join(prose, "\n")
	for _, m := range inlineCode.FindAllStringSubmatchIndex(joined, -1) {
		d.spans = append(d.spans, span{
			file: rel,
			line: strings.Count(joined[:m[0]], "\n") + 1,
			text: strings.Join(strings.Fields(joined[m[2]:m[3]]), " "),
		})
	}
	return d
}

// shellLines returns the commands of a shell block: comments stripped,
// backslash continuations joined, each with its first line number.
func shellLines(b block) []span {
	var out []span
	var acc strings.Builder
	start := 0
	for i, l := range strings.Split(b.text, "\n") {
		if acc.Len() == 0 {
			start = b.line + i
		}
		if cont, ok := strings.CutSuffix(strings.TrimRight(l, " "), "\\"); ok {
			acc.WriteString(cont + " ")
			continue
		}
		acc.WriteString(l)
		cmd := stripComment(acc.String())
		acc.Reset()
		if cmd != "" {
			out = append(out, span{file: b.file, line: start, text: cmd})
		}
	}
	return out
}

// stripComment drops a trailing "# ..." comment (a # that starts a word)
// and surrounding space.
func stripComment(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		if strings.HasPrefix(f, "#") {
			fields = fields[:i]
			break
		}
	}
	return strings.Join(fields, " ")
}

func isShell(lang string) bool { return lang == "sh" || lang == "bash" || lang == "shell" }

// proc is a running gatehouse process started by startGatehouse.
type proc struct {
	mu     sync.Mutex
	stderr strings.Builder
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

var bannerAddr = regexp.MustCompile(`([A-Za-z_]+ (?:gRPC|HTTP)) on ([^,\s]+)`)

// startGatehouse runs the binary with args and returns the addresses of
// its start banner ("gatehouse serve: ext_authz gRPC on A, xDS gRPC on B,
// admin HTTP on C"), keyed by "ext_authz gRPC", "xDS gRPC", "admin HTTP".
// The process is interrupted when the test ends.
func startGatehouse(t *testing.T, args ...string) (*proc, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	p := &proc{}
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.stderr.Write(b)
	})
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan map[string]string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "gatehouse ") && strings.Contains(l, " on ") {
				addrs := map[string]string{}
				for _, m := range bannerAddr.FindAllStringSubmatch(l, -1) {
					addrs[m[1]] = m[2]
				}
				select {
				case banner <- addrs:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("gatehouse %s stderr:\n%s", args[0], p.logs())
		}
	})
	select {
	case addrs := <-banner:
		return p, addrs
	case <-time.After(30 * time.Second):
		t.Fatalf("gatehouse %v did not start; stderr:\n%s", args, p.logs())
		return nil, nil
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
