// Command noopauthz is an ext_authz Check server that allows everything
// without looking at the request: the physical limit of gRPC on this
// machine, against which the benchmark harness measures every real server.
//
//	noopauthz [-listen 127.0.0.1:0]
//
// It prints "noopauthz: ext_authz gRPC on ADDR" once it listens.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

type noop struct {
	authv3.UnimplementedAuthorizationServer
	ok *authv3.CheckResponse
}

func (n *noop) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return n.ok, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC listen address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen); err != nil {
		log.Error("noopauthz", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, &noop{ok: &authv3.CheckResponse{
		Status:       &status.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}})
	fmt.Printf("noopauthz: ext_authz gRPC on %s\n", lis.Addr())
	go func() { <-ctx.Done(); gs.Stop() }()
	if err := gs.Serve(lis); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
