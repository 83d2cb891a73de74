// Package server serves Gatehouse's xDS cache over gRPC: aggregated
// discovery (ADS) in both state-of-the-world and delta form, with ACK/NACK
// tracking, Prometheus metrics and an admin status endpoint.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
)

// Cache is what the server needs from the cache: watches to answer, and a
// place to record what each node was sent and how it answered.
type Cache interface {
	gcache.Cache
	StreamOpened(nodeID string)
	StreamClosed(nodeID string)
	RecordSent(nodeID string, p cache.Push) cache.Push
	RecordAck(nodeID string, p cache.Push)
	RecordNack(nodeID string, p cache.Push, nonce, msg string, at time.Time)
	Status() []cache.NodeStatus
}

var _ Cache = (*cache.Cache)(nil)

// Option configures a Server.
type Option func(*options)

type options struct {
	log                  *slog.Logger
	reg                  prometheus.Registerer
	params               keepalive.ServerParameters
	policy               keepalive.EnforcementPolicy
	maxConcurrentStreams uint32
	maxRecvMsgSize       int
	now                  func() time.Time
	tls                  *tls.Config
	authorize            NodeAuthorizer
}

// NodeAuthorizer decides whether the peer of a stream may subscribe as
// nodeID; ctx is the stream's, carrying its peer and TLS state. An error
// closes the stream before anything is sent: node ids are not secrets, and
// a node's resources include its private keys.
type NodeAuthorizer func(ctx context.Context, nodeID string) error

// WithTLS serves ADS over TLS with cfg (set ClientAuth to require client
// certificates). Without it ADS is plaintext, for loopback and tests.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithNodeAuthorizer checks every stream's node id with a.
func WithNodeAuthorizer(a NodeAuthorizer) Option { return func(o *options) { o.authorize = a } }

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRegisterer registers the server's metrics; without it they are kept
// but not exported.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.reg = r } }

// WithKeepalive replaces the keepalive parameters and enforcement policy.
func WithKeepalive(p keepalive.ServerParameters, e keepalive.EnforcementPolicy) Option {
	return func(o *options) { o.params, o.policy = p, e }
}

// WithMaxConcurrentStreams bounds streams per client connection.
func WithMaxConcurrentStreams(n uint32) Option {
	return func(o *options) { o.maxConcurrentStreams = n }
}

// WithMaxRecvMsgSize bounds the size of one discovery request.
func WithMaxRecvMsgSize(n int) Option { return func(o *options) { o.maxRecvMsgSize = n } }

// Server is an ADS server over a Cache. Create it with New.
type Server struct {
	cache   Cache
	log     *slog.Logger
	opts    options
	metrics *metrics
	xds     serverv3.Server
	// stop ends every xDS stream; streams are endless otherwise and would
	// hold a graceful stop forever.
	stop context.CancelFunc

	// streams holds each open stream's state. Not one mutex and a map:
	// every request and response of every stream looks its state up, and
	// with thousands of streams answering one change at once a single
	// lock is where they would queue (see streamTable).
	streams streamTable
}

// streamKey separates SotW and delta stream ids, which go-control-plane
// counts independently.
type streamKey struct {
	delta bool
	id    int64
}

// streamState is one stream's record. go-control-plane runs a stream's
// callbacks on that stream's goroutine, so mu is never contended; it only
// makes the record safe without relying on that.
type streamState struct {
	ctx     context.Context // the stream's: peer and TLS state
	mu      sync.Mutex
	node    string
	pending map[string]pending // type URL → last push awaiting an answer
}

type pending struct {
	nonce string
	push  cache.Push
}

// New returns a server for c. Metrics are registered here; an error means
// the registerer already holds them.
func New(c Cache, opts ...Option) (*Server, error) {
	o := options{
		log: slog.New(slog.DiscardHandler),
		params: keepalive.ServerParameters{
			// Proxies hold one stream for ever; idle means broken.
			MaxConnectionIdle: 5 * time.Minute,
			Time:              30 * time.Second,
			Timeout:           10 * time.Second,
		},
		policy: keepalive.EnforcementPolicy{
			// Envoy and grpc-go commonly ping every 10-30s; allow that.
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		},
		maxConcurrentStreams: 100,
		// Requests are names, versions and an error detail.
		maxRecvMsgSize: 4 << 20,
		now:            time.Now,
	}
	for _, opt := range opts {
		opt(&o)
	}
	m, err := newMetrics(o.reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cache:   c,
		log:     o.log,
		opts:    o,
		metrics: m,
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.xds = serverv3.NewServer(ctx, c, s.callbacks(),
		// Envoy relies on CDS→EDS→LDS→RDS ordering over ADS.
		sotw.WithOrderedADS(),
		sotw.WithLogger(cache.GCPLogger(o.log)),
		// Only LDS and CDS may be wildcard; an empty RDS/EDS/SDS request
		// (grpc-go unsubscribing) must not mean "everything".
		sotw.DeactivateLegacyWildcardForTypes([]string{
			resource.RouteType, resource.EndpointType, resource.SecretType,
		}),
	)
	return s, nil
}

// recvWindow is the fixed flow-control window per stream and per
// connection (see ServerOptions).
const recvWindow = 1 << 20

// ServerOptions are the gRPC options the xDS server should run with:
// keepalive, stream and message size limits, and fixed flow-control
// windows.
//
// Fixed windows turn off grpc-go's BDP estimation, which answers a
// received message on an otherwise quiet connection with a window update
// and a ping that the client must answer: with one connection per proxy,
// every ACK of a push to thousands of proxies cost two more writes and
// two more reads on each side. Requests are small; the receive window
// only bounds what a client may send ahead (MaxRecvMsgSize still bounds a
// message).
func (s *Server) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(s.opts.params),
		grpc.KeepaliveEnforcementPolicy(s.opts.policy),
		grpc.MaxConcurrentStreams(s.opts.maxConcurrentStreams),
		grpc.MaxRecvMsgSize(s.opts.maxRecvMsgSize),
		grpc.StaticStreamWindowSize(recvWindow),
		grpc.StaticConnWindowSize(recvWindow),
	}
	if s.opts.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.opts.tls)))
	}
	return opts
}

// Register adds the ADS service (SotW and delta) to g. g should be built
// with ServerOptions.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Close ends every open xDS stream; the server serves no new ones.
func (s *Server) Close() { s.stop() }

// Serve runs a gRPC server with ADS on lis until ctx ends, then closes the
// xDS streams and stops gracefully. It returns nil after ctx ends.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := grpc.NewServer(s.ServerOptions()...)
	s.Register(g)

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		s.Close()
		g.GracefulStop()
	})
	err := g.Serve(lis)
	close(done)
	wg.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, grpc.ErrServerStopped)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("xds serve: %w", err)
	}
	return nil
}
