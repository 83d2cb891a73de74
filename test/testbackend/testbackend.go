// Package testbackend runs real gRPC backends for tests: grpc-go's interop
// TestService, whose UnaryCall answers with the backend's id, so a test can
// see which endpoint a client's load balancing reached.
package testbackend

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type backend struct {
	testgrpc.UnimplementedTestServiceServer
	id string
}

func (b *backend) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{ServerId: b.id}, nil
}

// Start serves a backend named id on a loopback port until the test ends
// and returns its address.
func Start(t testing.TB, id string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, &backend{id: id})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}
