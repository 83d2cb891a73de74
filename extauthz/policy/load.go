package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/gatehouse-proxy/gatehouse/internal/srcpos"
)

// Error is one problem in a policy file, located as file:line:col so editors
// and CI logs can jump to it.
type Error struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"col,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return srcpos.Message(e.File, e.Line, e.Col, e.Code, e.Message)
}

// fromASTErrors flattens OPA's errors (parse or compile) into located Errors.
// Anything that is not an ast error is kept as is.
func fromASTErrors(file string, err error) []error {
	var astErrs ast.Errors
	if !errors.As(err, &astErrs) {
		var one *ast.Error
		if !errors.As(err, &one) {
			return []error{&Error{File: file, Message: err.Error()}}
		}
		astErrs = ast.Errors{one}
	}
	out := make([]error, 0, len(astErrs))
	for _, e := range astErrs {
		pe := &Error{File: file, Code: e.Code, Message: e.Message}
		if e.Location != nil {
			if e.Location.File != "" {
				pe.File = e.Location.File
			}
			pe.Line, pe.Col = e.Location.Row, e.Location.Col
		}
		out = append(out, pe)
	}
	return out
}

// dataFiles are the only static data documents read from a policy
// directory; they must sit at its root and become the root of data.
var dataFiles = []string{"data.json", "data.yaml", "data.yml"}

// policySet is what one read of a policy directory produced.
type policySet struct {
	modules  map[string]*ast.Module // keyed by file path
	data     map[string]any
	files    []string // relative paths, sorted
	revision string
}

// readDir reads dir: every *.rego file below it (skipping *_test.rego unless
// withTests, and anything hidden, which covers editor swap files and the
// "..data" links of Kubernetes ConfigMap mounts), plus the root data file.
// It returns every parse error it finds, not just the first.
// Bounds on what one policy directory may hold. A policy set is code an
// operator wrote; anything near these sizes is a mistake (a data dump, a
// log file renamed .rego), and reading it whole would cost every replica
// memory and a long compile. Over a bound the reload fails and the last
// good revision keeps serving.
const (
	MaxPolicyFileBytes = 4 << 20
	MaxPolicyBytes     = 32 << 20
	MaxPolicyFiles     = 10000
)

// readBounded reads path, failing if it holds more than limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, &Error{File: path, Message: fmt.Sprintf("larger than %d bytes", limit)}
	}
	return b, nil
}

func readDir(dir string, withTests bool, base map[string]any) (*policySet, []error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, []error{fmt.Errorf("policy directory: %w", err)}
	}
	if !info.IsDir() {
		return nil, []error{fmt.Errorf("policy directory %s: not a directory", dir)}
	}

	type file struct {
		rel     string
		content []byte
	}
	var files []file
	var errs []error
	total := 0
	// The trailing separator makes WalkDir descend into dir when dir is a
	// symlink to a directory (a release directory switched by a link):
	// walked as is, it would be one non-directory entry and load nothing.
	root := dir + string(filepath.Separator)
	walkErr := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			return nil
		}
		name := d.Name()
		if path != root && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		isData := slices.Contains(dataFiles, rel)
		isRego := strings.HasSuffix(name, ".rego") && (withTests || !strings.HasSuffix(name, "_test.rego"))
		if !isData && !isRego {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			st, err := os.Stat(path)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				return nil
			}
			if !st.Mode().IsRegular() {
				return nil
			}
		}
		if len(files) >= MaxPolicyFiles {
			errs = append(errs, fmt.Errorf("%s: more than %d policy files", dir, MaxPolicyFiles))
			return filepath.SkipAll
		}
		b, err := readBounded(path, MaxPolicyFileBytes)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if total += len(b); total > MaxPolicyBytes {
			errs = append(errs, fmt.Errorf("%s: policy files exceed %d bytes in all", dir, MaxPolicyBytes))
			return filepath.SkipAll
		}
		files = append(files, file{rel: filepath.ToSlash(rel), content: b})
		return nil
	})
	if walkErr != nil {
		errs = append(errs, fmt.Errorf("walking %s: %w", dir, walkErr))
	}

	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.rel, b.rel) })
	ps := &policySet{modules: map[string]*ast.Module{}, data: map[string]any{}}
	maps.Copy(ps.data, base)
	h := sha256.New()
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}
	for _, f := range files {
		ps.files = append(ps.files, f.rel)
		h.Write([]byte(f.rel))
		h.Write([]byte{0})
		h.Write(f.content)
		h.Write([]byte{0})
		path := filepath.Join(dir, filepath.FromSlash(f.rel))
		if strings.HasSuffix(f.rel, ".rego") {
			m, err := ast.ParseModuleWithOpts(path, string(f.content), popts)
			if err != nil {
				errs = append(errs, fromASTErrors(path, err)...)
				continue
			}
			if m == nil { // only comments or whitespace
				errs = append(errs, &Error{File: path, Message: "empty module: a policy file needs a package declaration"})
				continue
			}
			ps.modules[path] = m
			continue
		}
		var doc map[string]any
		var err error
		if strings.HasSuffix(f.rel, ".json") {
			err = util.UnmarshalJSON(f.content, &doc)
		} else {
			err = util.Unmarshal(f.content, &doc)
		}
		if err != nil {
			errs = append(errs, &Error{File: path, Message: fmt.Sprintf("parsing data: %v", err)})
			continue
		}
		if err := mergeData(ps.data, doc, ""); err != nil {
			errs = append(errs, &Error{File: path, Message: err.Error()})
		}
	}
	ps.revision = hex.EncodeToString(h.Sum(nil))[:12]
	if len(errs) > 0 {
		return nil, errs
	}
	return ps, nil
}

// mergeData deep-merges src into dst; the same leaf defined twice (e.g. in
// WithData and data.json) is an error rather than a silent override.
func mergeData(dst, src map[string]any, at string) error {
	for k, v := range src {
		path := at + "/" + k
		cur, exists := dst[k]
		if !exists {
			dst[k] = v
			continue
		}
		cm, ok1 := cur.(map[string]any)
		sm, ok2 := v.(map[string]any)
		if !ok1 || !ok2 {
			return fmt.Errorf("data %s defined twice", path)
		}
		merged := maps.Clone(cm)
		if err := mergeData(merged, sm, path); err != nil {
			return err
		}
		dst[k] = merged
	}
	return nil
}

// compileModules compiles like `opa check`: Rego v1, print statements kept
// (so the serving engine can route them to the log), all errors reported.
func compileModules(modules map[string]*ast.Module) (*ast.Compiler, []error) {
	c := ast.NewCompiler().
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(true)
	c.Compile(modules)
	if c.Failed() {
		return nil, fromASTErrors("", c.Errors)
	}
	return c, nil
}

// Check parses and compiles every *.rego file under dir, tests included,
// plus the root data file, as `opa check` would, for `gatehouse validate`.
// It returns all problems found, each naming file:line:col where OPA knows
// it; nil means the directory would load.
func Check(dir string) []error {
	ps, errs := readDir(dir, true, nil)
	if len(errs) > 0 {
		return errs
	}
	if _, errs := compileModules(ps.modules); len(errs) > 0 {
		return errs
	}
	return nil
}
