package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// RunTests runs the Rego unit tests (test_* rules, usually in *_test.rego)
// found under dir, like `opa test dir`, with the same file selection and data
// as the serving engine plus the test files. passed and failed count test
// results (todo_test_* rules are skipped and count as neither); results holds
// one entry per test in completion order. err is non-nil when the directory
// does not load or compile, in which case no test ran.
func RunTests(ctx context.Context, dir string) (passed, failed int, results []*tester.Result, err error) {
	ps, errs := readDir(dir, true, nil)
	if len(errs) > 0 {
		return 0, 0, nil, fmt.Errorf("policy/regotest.go: loading %s: %w", dir, errors.Join(errs...))
	}
	if len(ps.modules) == 0 {
		return 0, 0, nil, nil
	}
	ch, err := tester.NewRunner().
		SetDefaultRegoVersion(ast.RegoV1).
		SetStore(inmem.NewFromObject(ps.data)).
		SetModules(ps.modules).
		RaiseBuiltinErrors(true).
		CapturePrintOutput(true).
		EnableTracing(false).
		RunTests(ctx, nil)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("policy/regotest.go: compiling tests in %s: %w", dir, errors.Join(fromASTErrors(dir, err)...))
	}
	for r := range ch {
		results = append(results, r)
		switch {
		case r.Skip:
		case r.Pass():
			passed++
		default:
			failed++
		}
	}
	if err := ctx.Err(); err != nil {
		return passed, failed, results, fmt.Errorf("policy/regotest.go: running tests in %s: %w", dir, err)
	}
	return passed, failed, results, nil
}
