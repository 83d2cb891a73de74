package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

// runValidate checks what a server would load — the config file and the
// policy directory — without starting anything, like `opa check`. Every
// problem is printed as file:line: message; the exit code is 1 if any.
func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	var policyDir string
	fs := newFlagSet("validate", "[flags]", "Checks a config file (schema, and the mesh as translated for proxies) and its Rego policies and prints every problem as\nfile:line: message. Exits 0 when all is valid, 1 otherwise.", stderr)
	cf.register(fs)
	fs.StringVar(&policyDir, "policies", "", "override authz.policies.dir")
	if code, ok := parseFlagsOnly(fs, args); !ok {
		return code
	}
	problems := 0
	report := func(err error) {
		var many interface{ Unwrap() []error }
		if errors.As(err, &many) {
			for _, e := range many.Unwrap() {
				fmt.Fprintln(stderr, e)
				problems++
			}
			return
		}
		fmt.Fprintln(stderr, err)
		problems++
	}
	cfg, err := config.Load[config.Config](cf.config)
	if err != nil {
		report(err)
		fmt.Fprintf(stderr, "%d problem(s)\n", problems)
		return 1
	}
	override(&cfg.Authz.Policies.Dir, policyDir)
	// The mesh as proxies would receive it: translated and deep-validated.
	if res, err := translate.Translate(&cfg.Mesh, translate.WithIdentityHeaderPrefix(cfg.Authz.Headers.Prefix)); err != nil {
		report(fmt.Errorf("%s: mesh: %w", cf.config, err))
	} else {
		for _, nr := range res.Nodes {
			if err := validate.Validate(nr, nr.SecretNames...); err != nil {
				report(fmt.Errorf("%s: mesh: %w", cf.config, err))
			}
		}
	}
	for _, err := range policy.Check(cfg.Authz.Policies.Dir) {
		report(err)
	}
	if problems > 0 {
		fmt.Fprintf(stderr, "%d problem(s)\n", problems)
		return 1
	}
	fmt.Fprintf(stdout, "ok: %s and policies in %s are valid\n", cf.config, cfg.Authz.Policies.Dir)
	return 0
}
