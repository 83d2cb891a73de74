package docs

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// foreignFlags are flags shown on their own in the READMEs that belong to
// another tool, not to gatehouse.
var foreignFlags = map[string]bool{"set-file": true}

// gatehouseCmd matches a command line or code span that runs gatehouse
// (bin/gatehouse, ./gatehouse, gatehouse).
var gatehouseCmd = regexp.MustCompile(`^(?:\S*/)?gatehouse(\s.*)?$`)

// help caches the flags of each subcommand, from `gatehouse <sub> -h`.
type help struct {
	t        *testing.T
	subs     map[string][]string // "" → top-level commands, "ca" → ca commands
	flags    map[string]map[string]bool
	required map[string][]string // flags whose help says "required"
}

var (
	helpFlag     = regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`)
	helpRequired = regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*).*\n\s+.*(?:\(required\)|; required)$`)
)
var helpCommand = regexp.MustCompile(`(?m)^  ([a-z]+)\s{2,}\S`)

func newHelp(t *testing.T) *help {
	h := &help{t: t, subs: map[string][]string{}, flags: map[string]map[string]bool{}, required: map[string][]string{}}
	for _, parent := range []string{"", "ca"} {
		args := append(strings.Fields(parent), "--help")
		out, _ := exec.Command(binary, args...).CombinedOutput()
		for _, m := range helpCommand.FindAllStringSubmatch(string(out), -1) {
			h.subs[parent] = append(h.subs[parent], m[1])
		}
		if len(h.subs[parent]) == 0 {
			t.Fatalf("gatehouse %s --help lists no commands:\n%s", parent, out)
		}
	}
	return h
}

// flagsOf returns the flags of a subcommand ("serve", "ca init"), or nil
// when gatehouse does not know it.
func (h *help) flagsOf(sub string) map[string]bool {
	if f, ok := h.flags[sub]; ok {
		return f
	}
	parts := strings.Fields(sub)
	parent := strings.Join(parts[:len(parts)-1], " ")
	if !slices.Contains(h.subs[parent], parts[len(parts)-1]) {
		h.flags[sub] = nil
		return nil
	}
	out, _ := exec.Command(binary, append(parts, "-h")...).CombinedOutput()
	f := map[string]bool{"h": true, "help": true}
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		f[m[1]] = true
	}
	if len(f) == 2 {
		h.t.Fatalf("gatehouse %s -h shows no flags:\n%s", sub, out)
	}
	for _, m := range helpRequired.FindAllStringSubmatch(string(out), -1) {
		h.required[sub] = append(h.required[sub], m[1])
	}
	h.flags[sub] = f
	return f
}

// docCommands is every gatehouse invocation in the READMEs: shell block
// lines and inline code spans.
func docCommands(t *testing.T) []span {
	var out []span
	for _, rel := range readmes {
		d := readDoc(t, rel)
		for _, b := range d.blocks {
			if isShell(b.lang) {
				for _, l := range shellLines(b) {
					if gatehouseCmd.MatchString(l.text) {
						out = append(out, l)
					}
				}
			}
		}
		for _, s := range d.spans {
			if gatehouseCmd.MatchString(s.text) {
				out = append(out, s)
			}
		}
	}
	return out
}

// commandArgs splits a gatehouse command into the words given to the
// binary, stopping at a redirection, pipe or command separator.
func commandArgs(cmd string) []string {
	fields := strings.Fields(cmd)[1:]
	for i, f := range fields {
		if f == ">" || f == "|" || f == "&&" || f == ";" || strings.HasPrefix(f, ">") {
			return fields[:i]
		}
	}
	return fields
}

// TestDocumentedFlagsExist checks every `gatehouse <command> --flag` of the
// READMEs against `gatehouse <command> -h`, and every flag shown on its own
// (`--shutdown-delay`) against the flags of some command.
func TestDocumentedFlagsExist(t *testing.T) {
	h := newHelp(t)
	cmds := docCommands(t)
	if len(cmds) < 20 {
		t.Fatalf("found only %d gatehouse commands in the READMEs", len(cmds))
	}
	for _, c := range cmds {
		args := commandArgs(c.text)
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			for _, a := range args {
				if a != "--help" && a != "-h" {
					t.Errorf("%s: `%s`: gatehouse takes a command first", c.where(), c.text)
				}
			}
			continue
		}
		if strings.HasPrefix(args[0], "<") { // gatehouse <command> --help
			continue
		}
		var subs []string
		rest := args[1:]
		if args[0] == "ca" {
			if len(args) < 2 {
				continue // "gatehouse ca" as a name
			}
			// `gatehouse ca init\|issue\|inspect\|rotate` in a table.
			for _, s := range strings.Split(strings.ReplaceAll(args[1], `\|`, "|"), "|") {
				subs = append(subs, "ca "+s)
			}
			rest = args[2:]
		} else {
			subs = []string{args[0]}
		}
		for _, sub := range subs {
			flags := h.flagsOf(sub)
			if flags == nil {
				t.Errorf("%s: `%s`: gatehouse has no command %q", c.where(), c.text, sub)
				continue
			}
			given := map[string]bool{}
			for _, a := range rest {
				if !strings.HasPrefix(a, "-") || a == "-" {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				given[name] = true
				if !flags[name] {
					t.Errorf("%s: `%s`: gatehouse %s has no flag -%s", c.where(), c.text, sub, name)
				}
			}
			// A command shown with flags is one to copy: it must have the
			// required ones (`bootstrap --check FILE` needs no --node).
			if len(given) > 0 && !given["check"] && !given["h"] && !given["help"] {
				for _, r := range h.required[sub] {
					if !given[r] {
						t.Errorf("%s: `%s`: gatehouse %s requires --%s", c.where(), c.text, sub, r)
					}
				}
			}
		}
	}

	// Flags on their own, e.g. "(`--shutdown-delay`, default `0`)".
	all := map[string]bool{}
	for _, sub := range h.subs[""] {
		if sub == "ca" {
			continue
		}
		for f := range h.flagsOf(sub) {
			all[f] = true
		}
	}
	for _, sub := range h.subs["ca"] {
		for f := range h.flagsOf("ca " + sub) {
			all[f] = true
		}
	}
	for _, rel := range readmes {
		for _, s := range readDoc(t, rel).spans {
			if !strings.HasPrefix(s.text, "--") {
				continue
			}
			for _, f := range strings.Split(strings.Fields(s.text)[0], "/") {
				name, _, _ := strings.Cut(strings.TrimLeft(f, "-"), "=")
				if !all[name] && !foreignFlags[name] {
					t.Errorf("%s: `%s`: no gatehouse command has a flag --%s (another tool's? add it to foreignFlags)", s.where(), s.text, name)
				}
			}
		}
	}
}

// TestDocumentedMakeTargetsExist checks every `make <target>` of the
// READMEs against the Makefile's rules.
func TestDocumentedMakeTargetsExist(t *testing.T) {
	root := repoRoot(t)
	f, err := os.Open(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	targets := map[string]bool{}
	rule := regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_-]*)\s*:([^=]|$)`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := rule.FindStringSubmatch(sc.Text()); m != nil {
			targets[m[1]] = true
		}
	}
	var cmds []span
	for _, rel := range readmes {
		d := readDoc(t, rel)
		for _, b := range d.blocks {
			if isShell(b.lang) {
				cmds = append(cmds, shellLines(b)...)
			}
		}
		cmds = append(cmds, d.spans...)
	}
	n := 0
	for _, c := range cmds {
		fields := strings.Fields(c.text)
		if len(fields) == 0 || fields[0] != "make" {
			continue
		}
		for _, a := range fields[1:] {
			if strings.Contains(a, "=") || strings.HasPrefix(a, "-") {
				continue
			}
			n++
			if !targets[a] {
				t.Errorf("%s: `%s`: the Makefile has no target %q", c.where(), c.text, a)
			}
		}
	}
	if n < 5 {
		t.Fatalf("found only %d make targets in the READMEs", n)
	}
}

// TestQuickStartCommandsRun runs the `gatehouse validate` and `gatehouse
// bootstrap` lines of README.md's shell blocks as written, from the
// repository root, and checks a printed bootstrap with `bootstrap --check`.
func TestQuickStartCommandsRun(t *testing.T) {
	root := repoRoot(t)
	n := 0
	for _, b := range readDoc(t, "README.md").blocks {
		if !isShell(b.lang) {
			continue
		}
		for _, l := range shellLines(b) {
			if !gatehouseCmd.MatchString(l.text) || strings.Contains(l.text, "<") {
				continue
			}
			args := commandArgs(l.text)
			if len(args) == 0 || (args[0] != "validate" && args[0] != "bootstrap") {
				continue
			}
			n++
			cmd := exec.Command(binary, args...)
			cmd.Dir = root
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("%s: `%s` failed: %v\n%s%s", l.where(), l.text, err, out, stderrOf(err))
				continue
			}
			if args[0] == "bootstrap" {
				f := filepath.Join(t.TempDir(), "bootstrap.yaml")
				writeFile(t, f, string(out))
				if out, err := exec.Command(binary, "bootstrap", "--check", f).CombinedOutput(); err != nil {
					t.Errorf("%s: `%s` prints a bootstrap that fails --check: %v\n%s", l.where(), l.text, err, out)
				}
			}
		}
	}
	if n < 2 {
		t.Fatalf("found only %d validate/bootstrap commands in README.md's shell blocks", n)
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
