// Package xdsload simulates a fleet of Envoy proxies against an xDS control
// plane: each proxy has its own gRPC connection and one ADS stream (SotW or
// delta), subscribes as Envoy does (wildcard CDS and LDS, then the EDS, RDS
// and SDS names those reference), validates what it gets (NACKing what
// Envoy would reject) and ACKs the rest. The fleet records when every
// stream received each version, so the harness can time a change from the
// moment it is made until the last stream has it.
package xdsload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

// Types a proxy subscribes to, in Envoy's order.
var allTypes = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}

// Receipt is the latest version of one type a stream holds.
type Receipt struct {
	Version string
	At      time.Time
}

// decoded is what a set of resources of one node and version means to a
// proxy; shared by every stream of the node that gets the same bytes.
type decoded struct {
	once      sync.Once
	resources []types.Resource
	refs      map[string]map[string]bool // EDS/RDS names referenced
	err       error                      // a validation error: NACK
}

// decoder decodes and validates each distinct resource set once, and
// works out the SDS names of each distinct pair of cluster and listener
// sets once: every stream of a node would otherwise unpack the same
// transport sockets again, which is the load generator's CPU, not the
// control plane's, in the measured fan-out.
type decoder struct {
	m       sync.Map // key → *decoded
	secrets sync.Map // secretsKey → *referenced
}

type secretsKey struct{ cds, lds *decoded }

type referenced struct {
	once  sync.Once
	names []string
	err   error
}

// referencedSecrets returns the sorted SDS names the clusters of cds and
// the listeners of lds fetch over ADS.
func (d *decoder) referencedSecrets(cds, lds *decoded) ([]string, error) {
	k := secretsKey{cds, lds}
	v, ok := d.secrets.Load(k)
	if !ok {
		v, _ = d.secrets.LoadOrStore(k, &referenced{})
	}
	ref := v.(*referenced)
	ref.once.Do(func() {
		ref.names, ref.err = cache.ReferencedSecrets(lds.resources, cds.resources)
		sort.Strings(ref.names)
	})
	return ref.names, ref.err
}

func (d *decoder) get(key string, anys []*anypb.Any) *decoded {
	// Load first: every stream of a node asks for the same key, and
	// LoadOrStore would allocate a *decoded for each to throw away.
	v, ok := d.m.Load(key)
	if !ok {
		v, _ = d.m.LoadOrStore(key, &decoded{})
	}
	dec := v.(*decoded)
	dec.once.Do(func() {
		byName := map[string]types.ResourceWithTTL{}
		for _, a := range anys {
			m, err := a.UnmarshalNew()
			if err != nil {
				dec.err = err
				return
			}
			if err := validate.Message(m); err != nil {
				dec.err = err
				return
			}
			r := m.(types.Resource)
			dec.resources = append(dec.resources, r)
			byName[gcache.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
		}
		dec.refs = map[string]map[string]bool{}
		for t, names := range gcache.GetResourceReferences(byName) {
			dec.refs[t] = names
		}
	})
	return dec
}

// Proxy is one simulated Envoy: one connection, one ADS stream.
type Proxy struct {
	node  *corev3.Node
	delta bool
	dec   *decoder
	conn  *grpc.ClientConn

	mu       sync.Mutex
	got      map[string]Receipt
	subs     map[string][]string // named subscriptions (EDS, RDS, SDS)
	ver      map[string]string   // SotW: last version per type
	nonce    map[string]string   // SotW: last nonce per type
	current  map[string]*decoded // CDS, LDS as last accepted
	dres     map[string]map[string]*discovery.Resource
	ready    chan struct{}
	isReady  bool
	sendMu   sync.Mutex
	sotw     discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	dstream  discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	nacks    atomic.Int64
	receives atomic.Int64
}

func newProxy(nodeID string, delta bool, dec *decoder) *Proxy {
	return &Proxy{
		node:  &corev3.Node{Id: nodeID, Cluster: nodeID, UserAgentName: "envoy", Locality: &corev3.Locality{Zone: "bench"}},
		delta: delta, dec: dec,
		got: map[string]Receipt{}, subs: map[string][]string{}, ver: map[string]string{}, nonce: map[string]string{},
		current: map[string]*decoded{}, dres: map[string]map[string]*discovery.Resource{},
		ready: make(chan struct{}), done: make(chan struct{}),
	}
}

// NodeID is the proxy's node id.
func (p *Proxy) NodeID() string { return p.node.GetId() }

// Receipt returns the latest version of typ the proxy holds.
func (p *Proxy) Receipt(typ string) Receipt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[typ]
}

// start dials and opens the stream, then subscribes like Envoy.
func (p *Proxy) start(ctx context.Context, addr string) error {
	// Fixed windows, as Envoy's HTTP/2 codec has (256 MiB by default):
	// grpc-go's BDP estimation would answer every response with a window
	// update and a ping, traffic no Envoy sends.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithReadBufferSize(16<<10), grpc.WithWriteBufferSize(16<<10),
		grpc.WithStaticStreamWindowSize(16<<20), grpc.WithStaticConnWindowSize(16<<20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	p.conn = cc
	ctx, p.cancel = context.WithCancel(ctx)
	client := discovery.NewAggregatedDiscoveryServiceClient(cc)
	if p.delta {
		p.dstream, err = client.DeltaAggregatedResources(ctx)
	} else {
		p.sotw, err = client.StreamAggregatedResources(ctx)
	}
	if err != nil {
		p.cancel()
		cc.Close()
		return fmt.Errorf("open stream: %w", err)
	}
	go p.loop()
	// Wildcard CDS, then wildcard LDS; the node is sent on the first request.
	if err := p.request(resource.ClusterType, nil, "", nil, true); err != nil {
		return err
	}
	return p.request(resource.ListenerType, nil, "", nil, false)
}

// close ends the stream and the connection.
func (p *Proxy) close() {
	if p.cancel != nil {
		p.cancel()
	}
	if p.conn != nil {
		p.conn.Close()
	}
	<-p.done
}

// request sends a DiscoveryRequest; names nil on a wildcard type. For an
// ACK or NACK nonce is the response's; nack carries the error.
func (p *Proxy) request(typ string, names []string, nonce string, nack error, first bool) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	var node *corev3.Node
	if first {
		node = p.node
	}
	var detail *rpcstatus.Status
	if nack != nil {
		detail = &rpcstatus.Status{Code: 3, Message: nack.Error()}
	}
	if p.delta {
		return p.dstream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ, ResourceNamesSubscribe: names, ResponseNonce: nonce, ErrorDetail: detail})
	}
	p.mu.Lock()
	version := p.ver[typ]
	if nonce == "" {
		nonce = p.nonce[typ]
	}
	p.mu.Unlock()
	return p.sotw.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: version, ResourceNames: names, ResponseNonce: nonce, ErrorDetail: detail})
}

func (p *Proxy) loop() {
	defer close(p.done)
	for {
		var err error
		if p.delta {
			var r *discovery.DeltaDiscoveryResponse
			if r, err = p.dstream.Recv(); err == nil {
				err = p.onDelta(r)
			}
		} else {
			var r *discovery.DiscoveryResponse
			if r, err = p.sotw.Recv(); err == nil {
				err = p.onSotW(r)
			}
		}
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			return
		}
	}
}

func (p *Proxy) onSotW(r *discovery.DiscoveryResponse) error {
	p.receives.Add(1)
	typ := r.GetTypeUrl()
	dec := p.dec.get(p.node.GetId()+"|"+typ+"|"+r.GetVersionInfo(), r.GetResources())
	if dec.err != nil {
		p.nacks.Add(1)
		p.mu.Lock()
		p.nonce[typ] = r.GetNonce()
		names := p.subs[typ]
		p.mu.Unlock()
		return p.request(typ, names, r.GetNonce(), dec.err, false)
	}
	p.mu.Lock()
	p.ver[typ], p.nonce[typ] = r.GetVersionInfo(), r.GetNonce()
	p.got[typ] = Receipt{Version: r.GetVersionInfo(), At: time.Now()}
	names := p.subs[typ]
	p.mu.Unlock()
	// Envoy asks for what the new clusters and listeners reference before
	// it ACKs them.
	if typ == resource.ClusterType || typ == resource.ListenerType {
		if err := p.follow(typ, dec); err != nil {
			return err
		}
	}
	if err := p.request(typ, names, r.GetNonce(), nil, false); err != nil {
		return err
	}
	p.checkReady()
	return nil
}

func (p *Proxy) onDelta(r *discovery.DeltaDiscoveryResponse) error {
	p.receives.Add(1)
	typ := r.GetTypeUrl()
	p.mu.Lock()
	set := p.dres[typ]
	if set == nil {
		set = map[string]*discovery.Resource{}
		p.dres[typ] = set
	}
	for _, res := range r.GetResources() {
		set[res.GetName()] = res
	}
	for _, name := range r.GetRemovedResources() {
		delete(set, name)
	}
	names := slices.Sorted(maps.Keys(set))
	h := sha256.New()
	anys := make([]*anypb.Any, 0, len(names))
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{'@'})
		h.Write([]byte(set[n].GetVersion()))
		h.Write([]byte{';'})
		anys = append(anys, set[n].GetResource())
	}
	key := p.node.GetId() + "|" + typ + "|" + hex.EncodeToString(h.Sum(nil))
	p.mu.Unlock()
	dec := p.dec.get(key, anys)
	if dec.err != nil {
		p.nacks.Add(1)
		return p.request(typ, nil, r.GetNonce(), dec.err, false)
	}
	p.mu.Lock()
	p.got[typ] = Receipt{Version: r.GetSystemVersionInfo(), At: time.Now()}
	p.mu.Unlock()
	if typ == resource.ClusterType || typ == resource.ListenerType {
		if err := p.follow(typ, dec); err != nil {
			return err
		}
	}
	if err := p.request(typ, nil, r.GetNonce(), nil, false); err != nil {
		return err
	}
	p.checkReady()
	return nil
}

// follow updates the named subscriptions after a CDS or LDS update.
func (p *Proxy) follow(typ string, dec *decoded) error {
	p.mu.Lock()
	p.current[typ] = dec
	cds, lds := p.current[resource.ClusterType], p.current[resource.ListenerType]
	p.mu.Unlock()
	want := map[string][]string{}
	if typ == resource.ClusterType {
		want[resource.EndpointType] = sortedNames(dec.refs[resource.EndpointType])
	} else {
		want[resource.RouteType] = sortedNames(dec.refs[resource.RouteType])
	}
	if cds != nil && lds != nil {
		secrets, err := p.dec.referencedSecrets(cds, lds)
		if err != nil {
			return fmt.Errorf("referenced secrets: %w", err)
		}
		want[resource.SecretType] = secrets
	}
	for _, t := range []string{resource.EndpointType, resource.RouteType, resource.SecretType} {
		names, ok := want[t]
		if !ok {
			continue
		}
		p.mu.Lock()
		prev, had := p.subs[t]
		if had && slices.Equal(prev, names) {
			p.mu.Unlock()
			continue
		}
		p.subs[t] = names
		if len(names) == 0 {
			// Nothing of this type is referenced: it is complete as empty.
			if _, ok := p.got[t]; !ok {
				p.got[t] = Receipt{Version: "", At: time.Now()}
			}
		}
		p.mu.Unlock()
		if len(names) == 0 && !had {
			continue
		}
		if p.delta {
			var unsub []string
			for _, n := range prev {
				if !slices.Contains(names, n) {
					unsub = append(unsub, n)
				}
			}
			var sub []string
			for _, n := range names {
				if !slices.Contains(prev, n) {
					sub = append(sub, n)
				}
			}
			if err := p.sendDeltaSub(t, sub, unsub); err != nil {
				return err
			}
			continue
		}
		if err := p.request(t, names, "", nil, false); err != nil {
			return err
		}
	}
	return nil
}

func (p *Proxy) sendDeltaSub(typ string, sub, unsub []string) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.dstream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub})
}

func (p *Proxy) checkReady() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isReady {
		return
	}
	for _, t := range allTypes {
		if _, ok := p.got[t]; !ok {
			return
		}
	}
	p.isReady = true
	close(p.ready)
}

// Err is the error that ended the stream, if any.
func (p *Proxy) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
