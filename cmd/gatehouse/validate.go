package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

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
	printPolicyShape(ctx, stdout, cfg.Authz.Policies)
	return 0
}

// printPolicyShape says what the policy reads of input and whether its
// decisions are cached, so a policy edit that turns the cache off (a call
// to http.send, a read of the request id) shows before it is deployed.
func printPolicyShape(ctx context.Context, w io.Writer, p config.Policies) {
	opts := []policy.Option{policy.WithDir(p.Dir), policy.WithQuery(p.Query), policy.WithLogger(slog.New(slog.DiscardHandler))}
	if p.DecisionCache != nil {
		opts = append(opts, policy.WithDecisionCache(*p.DecisionCache))
	}
	e, err := policy.New(ctx, opts...)
	if err != nil || e == nil {
		return // Check above has reported what is wrong
	}
	st := e.Status()
	if len(st.Reads) > 0 {
		fmt.Fprintf(w, "policy reads: %s\n", strings.Join(st.Reads, ", "))
	}
	if st.DecisionCache.Enabled {
		fmt.Fprintln(w, "decision cache: on")
	} else if st.Revision != "" {
		fmt.Fprintf(w, "decision cache: off (%s)\n", st.DecisionCache.Reason)
	}
}
