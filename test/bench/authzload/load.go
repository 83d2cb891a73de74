// Package authzload is a closed-loop load generator for Envoy ext_authz
// servers: a fixed number of workers send pre-encoded CheckRequests for a
// fixed time, every answer is checked against the decision the fixture
// expects (a fast wrong answer is a failure, not a success), and latencies
// are kept whole so percentiles are exact.
package authzload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// Fixture is one request with the decision it must get.
type Fixture struct {
	// Raw is the encoded CheckRequest; encoding it once keeps the client's
	// CPU for sending.
	Raw   []byte
	Allow bool
}

// NewFixture encodes req.
func NewFixture(req *authv3.CheckRequest, allow bool) (Fixture, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return Fixture{}, fmt.Errorf("encode fixture: %w", err)
	}
	return Fixture{Raw: b, Allow: allow}, nil
}

// Load is one measurement.
type Load struct {
	Addr string
	// Addrs, when set, replaces Addr: the connections are spread over these
	// addresses round-robin (as Envoy's cluster spreads its connections over
	// the replicas behind one name), so there are at least len(Addrs).
	Addrs       []string
	Concurrency int
	Duration    time.Duration
	// Warmup runs before measuring and is not counted.
	Warmup time.Duration
	// Conns is the number of HTTP/2 connections the workers share (Envoy
	// keeps one per worker thread). Default 1.
	Conns    int
	Fixtures []Fixture
	// Timeout bounds one Check. Default 2s.
	Timeout time.Duration
	// OnMeasure, when set, is called as the measured window starts and ends
	// (to read the server's CPU counters).
	OnMeasure func(start bool)
}

// Result of one Load.
type Result struct {
	Requests int64         `json:"requests"`
	Failures int64         `json:"failures"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	RPS      float64       `json:"rps"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	// FirstFailure describes one failure, for the report.
	FirstFailure string `json:"first_failure,omitempty"`
}

// rawCodec sends pre-encoded requests and decodes responses as protobuf.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot send %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rawCodec: cannot decode into %T", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Run performs the load and returns what it measured. An error means the
// load could not run at all; failed checks are counted in the Result.
func Run(ctx context.Context, l Load) (Result, error) {
	if len(l.Fixtures) == 0 || l.Concurrency < 1 || l.Duration <= 0 {
		return Result{}, errors.New("authzload: need fixtures, concurrency ≥ 1 and a duration")
	}
	if l.Conns < 1 {
		l.Conns = 1
	}
	addrs := l.Addrs
	if len(addrs) == 0 {
		addrs = []string{l.Addr}
	}
	l.Conns = max(l.Conns, len(addrs))
	if l.Timeout == 0 {
		l.Timeout = 2 * time.Second
	}
	conns := make([]*grpc.ClientConn, l.Conns)
	for i := range conns {
		addr := addrs[i%len(addrs)]
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			return Result{}, fmt.Errorf("authzload: dial %s: %w", addr, err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	// One call per connection first, so connecting is not measured.
	for _, cc := range conns {
		if err := check(ctx, cc, l.Fixtures[0], l.Timeout); err != nil {
			return Result{}, fmt.Errorf("authzload: first check: %w", err)
		}
	}

	var measuring atomic.Bool
	var stop atomic.Bool
	type worker struct {
		lat      []time.Duration
		failures int64
		first    string
	}
	workers := make([]worker, l.Concurrency)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := &workers[w]
			cc := conns[w%len(conns)]
			me.lat = make([]time.Duration, 0, 1<<14)
			for i := w; !stop.Load(); i++ {
				f := l.Fixtures[i%len(l.Fixtures)]
				t0 := time.Now()
				err := check(ctx, cc, f, l.Timeout)
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				me.lat = append(me.lat, d)
				if err != nil {
					me.failures++
					if me.first == "" {
						me.first = err.Error()
					}
				}
			}
		}()
	}
	sleep(ctx, l.Warmup)
	if l.OnMeasure != nil {
		l.OnMeasure(true)
	}
	measuring.Store(true)
	t0 := time.Now()
	sleep(ctx, l.Duration)
	measuring.Store(false)
	elapsed := time.Since(t0)
	if l.OnMeasure != nil {
		l.OnMeasure(false)
	}
	stop.Store(true)
	wg.Wait()

	var all []time.Duration
	r := Result{Elapsed: elapsed}
	for _, w := range workers {
		all = append(all, w.lat...)
		r.Failures += w.failures
		if r.FirstFailure == "" {
			r.FirstFailure = w.first
		}
	}
	r.Requests = int64(len(all))
	r.RPS = float64(r.Requests) / elapsed.Seconds()
	slices.Sort(all)
	r.P50, r.P99 = percentile(all, 0.50), percentile(all, 0.99)
	return r, ctx.Err()
}

func check(ctx context.Context, cc *grpc.ClientConn, f Fixture, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var resp authv3.CheckResponse
	raw := f.Raw
	if err := cc.Invoke(ctx, checkMethod, &raw, &resp); err != nil {
		return err
	}
	allowed := resp.GetStatus().GetCode() == 0 && resp.GetDeniedResponse() == nil
	if allowed != f.Allow {
		return fmt.Errorf("wrong decision: allowed=%v, want %v (status %d)", allowed, f.Allow, resp.GetStatus().GetCode())
	}
	return nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
