// Command service is the demo upstream of the compose stack. One binary
// plays either service:
//
//   - inventory: GET /api/inventory/{id} answers a stock level.
//   - orders: GET /api/orders/{id} answers the order and, to fill it, calls
//     inventory through its sidecar's outbound listener
//     (http://127.0.0.1:15001 by default), forwarding x-gatehouse-assertion
//     when the request carried one.
//
// Every answer echoes the identity headers the service received from its
// sidecar (x-gatehouse-*, x-forwarded-client-cert), so the scripts in
// compose/scripts can see who Gatehouse said was calling. GET /healthz is
// the liveness probe. Configuration is by flag or environment:
//
//	-name     DEMO_NAME           orders|inventory (required)
//	-listen   DEMO_LISTEN         default 127.0.0.1:8080 (loopback: only the sidecar reaches it)
//	-inventory DEMO_INVENTORY_URL  default http://127.0.0.1:15001 (orders only)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], os.Getenv, logger, nil); err != nil {
		logger.Error("demo service failed", "error", err)
		stop()
		os.Exit(1)
	}
}

// options is the parsed command line.
type options struct {
	name      string
	listen    string
	inventory string
}

func parseOptions(args []string, getenv func(string) string) (options, error) {
	def := func(key, fallback string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return fallback
	}
	var o options
	fs := flag.NewFlagSet("service", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.name, "name", def("DEMO_NAME", ""), "service to play: orders or inventory")
	fs.StringVar(&o.listen, "listen", def("DEMO_LISTEN", "127.0.0.1:8080"), "listen address")
	fs.StringVar(&o.inventory, "inventory", def("DEMO_INVENTORY_URL", "http://127.0.0.1:15001"), "inventory base URL (orders only): the sidecar's outbound listener")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("flags: %w", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.name != serviceOrders && o.name != serviceInventory {
		return o, fmt.Errorf("-name (or DEMO_NAME) must be %q or %q; got %q", serviceOrders, serviceInventory, o.name)
	}
	return o, nil
}

// run serves until ctx ends. When ready is not nil it receives the bound
// address once the listener is up.
func run(ctx context.Context, args []string, getenv func(string) string, logger *slog.Logger, ready chan<- string) error {
	o, err := parseOptions(args, getenv)
	if err != nil {
		return err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h, err := newHandler(config{
		Name:         o.name,
		InventoryURL: o.inventory,
		Client:       &http.Client{Timeout: 5 * time.Second},
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	logger.Info("demo service listening", "service", o.name, "addr", ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
