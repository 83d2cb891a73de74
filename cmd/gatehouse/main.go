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
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "gatehouse: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: gatehouse <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'gatehouse <command> --help' for the flags of one command.")
}
