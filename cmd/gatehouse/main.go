// Command gatehouse is an Envoy external-authorization server and xDS
// control plane in one binary. Each part runs alone (authz, xds) for scaling
// out, or together (serve) on one machine.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand. run gets the arguments after its name and
// returns the process exit code.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run the xDS control plane and the ext_authz server in one process", runServe},
		{"authz", "run the ext_authz gRPC server (envoy.service.auth.v3)", runAuthz},
		{"xds", "run the xDS control plane (ADS: LDS/RDS/CDS/EDS/SDS) with its CA", runXDS},
		{"bootstrap", "print the Envoy bootstrap for one proxy of the config", runBootstrap},
		{"validate", "check a config file and its policies; exit 1 with file:line errors", runValidate},
		{"ca", "manage the local certificate authority (init, issue, inspect, rotate)", runCA},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, "gatehouse", commands(), args, stdout, stderr)
}

// dispatch runs the command of cmds named by args[0]. Exit codes: 0
// success, 1 the operation failed, 2 the command line was wrong.
func dispatch(ctx context.Context, prefix string, cmds []command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		w, code := stderr, 2
		if len(args) > 0 {
			w, code = stdout, 0
		}
		usage(w, prefix, cmds)
		return code
	}
	for _, c := range cmds {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n", prefix, args[0])
	usage(stderr, prefix, cmds)
	return 2
}

func usage(w io.Writer, prefix string, cmds []command) {
	fmt.Fprintf(w, "Usage: %s <command> [flags]\n\nCommands:\n", prefix)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for its flags.\n", prefix)
}
