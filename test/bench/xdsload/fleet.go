package xdsload

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/sync/errgroup"

	"github.com/gatehouse-proxy/gatehouse/test/bench/internal/proc"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
)

// Options configure one Run.
type Options struct {
	// Bin is the gatehouse binary.
	Bin string
	// Dir receives the config file and the state directory.
	Dir     string
	Streams int
	Delta   bool
	Mesh    Mesh
	// ServerCPUs pins the control plane; empty: not pinned.
	ServerCPUs []int
	// ConnectParallel bounds concurrent dials (a reconnect storm). Default 64.
	ConnectParallel int
	// PhaseTimeout bounds each phase (connect, one change, disconnect);
	// it bounds failures only. Default 2m.
	PhaseTimeout time.Duration
	Log          *slog.Logger
}

// Change is one measured change.
type Change struct {
	Kind string `json:"kind"` // config, endpoints, rotation
	Type string `json:"type"` // the resource type it pushes
	// Nodes and Streams that had to get the new version.
	Nodes   int `json:"nodes"`
	Streams int `json:"streams"`
	// Converge is from the change (file written, rotation requested) until
	// the last affected stream received the new version.
	Converge time.Duration `json:"converge_ns"`
	// First is from the change until the first affected stream received
	// the new version: the control plane's work before its fan-out
	// (file-watch debounce, load, translate, validate, encode).
	First time.Duration `json:"first_ns"`
	// ServerCPU and ClientCPU are the CPU time the control plane and the
	// simulated fleet (this process) spent from the change until every
	// affected stream had it, including the harness's polling of the
	// admin endpoint: on a noisy machine a steadier figure than Converge
	// for comparing two versions of the control plane.
	ServerCPU time.Duration `json:"server_cpu_ns"`
	ClientCPU time.Duration `json:"client_cpu_ns"`
	// MaxPushes is the most responses one stream received during the
	// change (all types); a NACK loop shows as a large number.
	MaxPushes int64 `json:"max_pushes_per_stream"`
}

// Result is what one Run measured.
type Result struct {
	Mode    string `json:"mode"` // sotw or delta
	Streams int    `json:"streams"`
	Nodes   int    `json:"nodes"`
	// Connect is from the first dial until every stream held all five types.
	Connect time.Duration `json:"connect_ns"`
	// Heap and RSS of the server, idle and with every stream connected.
	HeapIdle       int64   `json:"heap_idle_bytes"`
	HeapConnected  int64   `json:"heap_connected_bytes"`
	HeapPerStream  float64 `json:"heap_per_stream_bytes"`
	RSSIdle        int64   `json:"rss_idle_bytes"`
	RSSConnected   int64   `json:"rss_connected_bytes"`
	RSSPerStream   float64 `json:"rss_per_stream_bytes"`
	GoroutinesIdle int     `json:"goroutines_idle"`
	GoroutinesConn int     `json:"goroutines_connected"`
	GoroutinesEnd  int     `json:"goroutines_after_disconnect"`
	// GoroutinesBack says the count returned to the idle baseline (±5)
	// after every stream disconnected.
	GoroutinesBack bool     `json:"goroutines_back_to_baseline"`
	Changes        []Change `json:"changes"`
	NACKs          int64    `json:"nacks"`
}

// RaiseFileLimit lifts the soft open-files limit to the hard one so n
// connections (and the server's, which inherits it) fit.
func RaiseFileLimit(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
		}
	}
	if need := uint64(n) + 256; lim.Cur < need {
		return fmt.Errorf("open-files limit %d is below the %d needed for %d streams (raise ulimit -Hn)", lim.Cur, need, n)
	}
	return nil
}

// Run starts `gatehouse xds` on a generated mesh, connects the fleet,
// measures the changes and the disconnect, and stops the server.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.ConnectParallel == 0 {
		o.ConnectParallel = 64
	}
	if o.PhaseTimeout == 0 {
		o.PhaseTimeout = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := RaiseFileLimit(o.Streams); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, "gatehouse.yaml")
	mesh := o.Mesh
	if err := writeAtomic(cfgPath, mesh.YAML()); err != nil {
		return nil, err
	}
	srv, addrs, err := proc.Start(ctx, o.Bin, []string{"xds", "--config", cfgPath, "--state-dir", filepath.Join(o.Dir, "state")},
		proc.Options{CPUs: o.ServerCPUs, Ready: regexp.MustCompile(`xDS gRPC on`)})
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	if len(addrs) != 2 {
		return nil, fmt.Errorf("gatehouse xds named %v", addrs)
	}
	a := &admin{base: "http://" + addrs[1]}
	mode := "sotw"
	if o.Delta {
		mode = "delta"
	}
	res := &Result{Mode: mode, Streams: o.Streams, Nodes: len(mesh.Nodes())}
	if err := a.waitReady(ctx, o.PhaseTimeout); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	if res.GoroutinesIdle, res.HeapIdle, err = a.settled(ctx); err != nil {
		return nil, err
	}
	st, _ := proc.ReadStats(srv.Pid())
	res.RSSIdle = st.RSS

	// Connect the fleet.
	dec := &decoder{}
	nodes := mesh.Nodes()
	proxies := make([]*Proxy, o.Streams)
	for i := range proxies {
		proxies[i] = newProxy(nodes[i%len(nodes)], o.Delta, dec)
	}
	defer func() {
		for _, p := range proxies {
			if p.cancel != nil {
				p.close()
			}
		}
	}()
	o.Log.Info("connecting", "mode", mode, "streams", o.Streams)
	t0 := time.Now()
	// Streams live on ctx, not on the group's context, which ends with Wait.
	var g errgroup.Group
	g.SetLimit(o.ConnectParallel)
	for _, p := range proxies {
		g.Go(func() error { return p.start(ctx, addrs[0]) })
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	deadline := time.After(o.PhaseTimeout)
	for i, p := range proxies {
		select {
		case <-p.ready:
		case <-p.done:
			return nil, fmt.Errorf("stream %d (%s) ended before it was complete: %v", i, p.NodeID(), p.Err())
		case <-deadline:
			return nil, fmt.Errorf("stream %d (%s) incomplete after %s: has %v", i, p.NodeID(), o.PhaseTimeout, p.types())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	res.Connect = time.Since(t0)
	o.Log.Info("connected", "mode", mode, "streams", o.Streams, "in", res.Connect)
	time.Sleep(time.Second)
	if res.GoroutinesConn, res.HeapConnected, err = a.settled(ctx); err != nil {
		return nil, err
	}
	st, _ = proc.ReadStats(srv.Pid())
	res.RSSConnected = st.RSS
	res.HeapPerStream = float64(res.HeapConnected-res.HeapIdle) / float64(o.Streams)
	res.RSSPerStream = float64(res.RSSConnected-res.RSSIdle) / float64(o.Streams)
	if n, err := a.streams(ctx); err != nil || n != o.Streams {
		return nil, fmt.Errorf("/debug/xds counts %d streams, want %d (%v)", n, o.Streams, err)
	}

	changes := []struct {
		kind, typ string
		all       bool
		do        func() error
	}{
		{"config", resource.ListenerType, true, func() error {
			mesh.AuthzTimeout += 100 * time.Millisecond
			return writeAtomic(cfgPath, mesh.YAML())
		}},
		{"endpoints", resource.EndpointType, false, func() error {
			mesh.EndpointGen++
			return writeAtomic(cfgPath, mesh.YAML())
		}},
		{"rotation", resource.SecretType, true, func() error { return a.rotate(ctx) }},
	}
	for _, c := range changes {
		ch, err := measureChange(ctx, a, srv.Pid(), proxies, nodes, c.kind, c.typ, c.all, c.do, o.PhaseTimeout)
		if err != nil {
			return nil, fmt.Errorf("%s %s change: %w", mode, c.kind, err)
		}
		o.Log.Info("change", "mode", mode, "kind", c.kind, "streams", ch.Streams, "first", ch.First, "converge", ch.Converge,
			"server_cpu", ch.ServerCPU, "client_cpu", ch.ClientCPU)
		res.Changes = append(res.Changes, *ch)
	}
	for _, p := range proxies {
		res.NACKs += p.nacks.Load()
		if err := p.Err(); err != nil {
			return nil, fmt.Errorf("stream of %s ended: %w", p.NodeID(), err)
		}
	}

	// Disconnect everything; the server must let go of every stream.
	for _, p := range proxies {
		p.close()
	}
	end := time.Now().Add(o.PhaseTimeout)
	for {
		n, _, err := a.metrics(ctx)
		if err == nil {
			res.GoroutinesEnd = n
			if n <= res.GoroutinesIdle+5 {
				res.GoroutinesBack = true
				break
			}
		}
		if time.Now().After(end) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return res, nil
}

// measureChange applies one change and waits until every stream of every
// node whose version of typ changed holds the new version.
func measureChange(ctx context.Context, a *admin, serverPid int, proxies []*Proxy, nodes []string, kind, typ string, all bool, do func() error, timeout time.Duration) (*Change, error) {
	before, err := a.versions(ctx, typ)
	if err != nil {
		return nil, err
	}
	pushes := make([]int64, len(proxies))
	for i, p := range proxies {
		pushes[i] = p.receives.Load()
	}
	// Start from a collected heap: a cycle of this process (which must
	// scan every simulated proxy's goroutine stacks) falling due within
	// the change because of earlier phases' garbage would time the load
	// generator, not the control plane.
	runtime.GC()
	serverCPU0, clientCPU0 := serverCPU(serverPid), selfCPU()
	t0 := time.Now()
	if err := do(); err != nil {
		return nil, err
	}
	// Wait until the server has the change (every node when all, else at
	// least one) and its versions stay put for a moment.
	deadline := t0.Add(timeout)
	var after map[string]string
	var stableSince time.Time
	for {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("server did not apply the change within %s (versions %v)", timeout, after)
		}
		cur, err := a.versions(ctx, typ)
		if err != nil {
			return nil, err
		}
		changed := 0
		for _, n := range nodes {
			if cur[n] != before[n] {
				changed++
			}
		}
		ok := changed > 0 && (!all || changed == len(nodes))
		if !ok || !mapsEqual(cur, after) {
			after, stableSince = cur, time.Now()
		} else if time.Since(stableSince) > 300*time.Millisecond {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	ch := &Change{Kind: kind, Type: typ}
	affected := map[string]bool{}
	for _, n := range nodes {
		if after[n] != before[n] {
			affected[n] = true
		}
	}
	ch.Nodes = len(affected)
	for _, p := range proxies {
		if !affected[p.NodeID()] {
			continue
		}
		ch.Streams++
		for {
			r := p.Receipt(typ)
			if r.Version == after[p.NodeID()] {
				d := r.At.Sub(t0)
				ch.Converge = max(ch.Converge, d)
				if ch.First == 0 || d < ch.First {
					ch.First = d
				}
				break
			}
			if err := p.Err(); err != nil {
				return nil, fmt.Errorf("stream of %s ended: %w", p.NodeID(), err)
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("a stream of %s holds %s version %q, want %q", p.NodeID(), typ, r.Version, after[p.NodeID()])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ch.ServerCPU, ch.ClientCPU = serverCPU(serverPid)-serverCPU0, selfCPU()-clientCPU0
	// Let late pushes arrive, then count what each stream received.
	time.Sleep(500 * time.Millisecond)
	for i, p := range proxies {
		if d := p.receives.Load() - pushes[i]; d > ch.MaxPushes {
			ch.MaxPushes = d
		}
	}
	return ch, nil
}

// serverCPU is the CPU time the process pid has used (10 ms steps), or 0.
func serverCPU(pid int) time.Duration {
	st, err := proc.ReadStats(pid)
	if err != nil {
		return 0
	}
	return st.CPU
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func (p *Proxy) types() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for t := range p.got {
		out = append(out, t[strings.LastIndexByte(t, '.')+1:])
	}
	return out
}

// writeAtomic replaces path by a rename, as editors and ConfigMaps do.
func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// admin is the control plane's admin endpoint.
type admin struct{ base string }

var client = &http.Client{Timeout: 10 * time.Second}

func (a *admin) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, nil
}

func (a *admin) waitReady(ctx context.Context, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		_, err := a.get(ctx, "/readyz")
		if err == nil {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("control plane not ready: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *admin) rotate(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/debug/rotate", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST /debug/rotate: %s", resp.Status)
	}
	return nil
}

func (a *admin) status(ctx context.Context) ([]cache.NodeStatus, error) {
	b, err := a.get(ctx, "/debug/xds")
	if err != nil {
		return nil, err
	}
	var st struct{ Nodes []cache.NodeStatus }
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("/debug/xds: %w", err)
	}
	return st.Nodes, nil
}

// versions maps node id → current version of typ in the server's cache.
func (a *admin) versions(ctx context.Context, typ string) (map[string]string, error) {
	nodes, err := a.status(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range nodes {
		out[n.NodeID] = n.Types[typ].Current
	}
	return out, nil
}

func (a *admin) streams(ctx context.Context) (int, error) {
	nodes, err := a.status(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, n := range nodes {
		total += n.Streams
	}
	return total, nil
}

// metrics reads go_goroutines and go_memstats_heap_inuse_bytes.
func (a *admin) metrics(ctx context.Context) (goroutines int, heap int64, err error) {
	b, err := a.get(ctx, "/metrics")
	if err != nil {
		return 0, 0, err
	}
	found := 0
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "go_goroutines":
			f, _ := strconv.ParseFloat(val, 64)
			goroutines, found = int(f), found+1
		case "go_memstats_heap_inuse_bytes":
			f, _ := strconv.ParseFloat(val, 64)
			heap, found = int64(f), found+1
		}
	}
	if found < 2 {
		return 0, 0, errors.New("/metrics lacks go_goroutines or go_memstats_heap_inuse_bytes")
	}
	return goroutines, heap, nil
}

// settled samples the metrics a few times and keeps the lowest heap (the
// least uncollected garbage) and the last goroutine count.
func (a *admin) settled(ctx context.Context) (goroutines int, heap int64, err error) {
	heap = -1
	for range 5 {
		n, h, err := a.metrics(ctx)
		if err != nil {
			return 0, 0, err
		}
		goroutines = n
		if heap < 0 || h < heap {
			heap = h
		}
		time.Sleep(200 * time.Millisecond)
	}
	return goroutines, heap, nil
}
