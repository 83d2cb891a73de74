package cache

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// node holds one node's content and its open watches. Each node has its
// own lock, so fan-out to one node's streams does not stall requests of
// the others.
type node struct {
	// res is the current content; written under mu, read without it.
	res atomic.Pointer[nodeResources]

	mu sync.Mutex
	// Open watches by response type, so a change answers types in the
	// order ADS requires (CDS, EDS, LDS, RDS, SDS) and visits only the
	// watches of types that changed. Each watch is answered once.
	sotw  [types.UnknownType]map[*sotwWatch]struct{}
	delta [types.UnknownType]map[*deltaWatch]struct{}
	// other holds watches of types outside the ordered set; never answered
	// with content, kept so a client's request is not lost.
	otherSotw  map[*sotwWatch]struct{}
	otherDelta map[*deltaWatch]struct{}
}

type sotwWatch struct {
	req *gcache.Request
	sub gcache.Subscription
	ch  chan gcache.Response
}

type deltaWatch struct {
	req *gcache.DeltaRequest
	sub gcache.Subscription
	ch  chan gcache.DeltaResponse
	// seen is the type content the watch was last compared with; a change
	// that leaves it in place cannot have anything new for the watch.
	seen *typeData
}

func newNode() *node {
	n := &node{otherSotw: map[*sotwWatch]struct{}{}, otherDelta: map[*deltaWatch]struct{}{}}
	for i := range n.sotw {
		n.sotw[i] = map[*sotwWatch]struct{}{}
		n.delta[i] = map[*deltaWatch]struct{}{}
	}
	return n
}

func (n *node) sotwSet(typeURL string) map[*sotwWatch]struct{} {
	if i := gcache.GetResponseType(typeURL); i != types.UnknownType {
		return n.sotw[i]
	}
	return n.otherSotw
}

func (n *node) deltaSet(typeURL string) map[*deltaWatch]struct{} {
	if i := gcache.GetResponseType(typeURL); i != types.UnknownType {
		return n.delta[i]
	}
	return n.otherDelta
}

// emptyType is what a type without resources looks like.
func emptyType(typeURL string) *typeData {
	td, _ := newTypeData(typeURL, nil)
	return td
}

// typeOf returns the content of typeURL in res, or nil when res is nil or
// does not hold the type.
func typeOf(res *nodeResources, typeURL string) *typeData {
	if res != nil {
		if td := res.data[typeURL]; td != nil {
			return td
		}
	}
	return nil
}

// set installs res and answers every watch whose type changed. The
// content stays installed even if ctx ends before every watch is answered;
// the unanswered ones stay open for the next change.
func (n *node) set(ctx context.Context, log *slog.Logger, res *nodeResources) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	prev := n.res.Swap(res)
	for i := range types.UnknownType {
		typeURL, _ := gcache.GetResponseTypeURL(i)
		td := typeOf(res, typeURL)
		// An open watch of an unchanged type already holds its content: a
		// watch is answered at once unless its client is current.
		if td == nil || (prev != nil && typeOf(prev, typeURL) == td) {
			continue
		}
		for w := range n.sotw[i] {
			if w.req.GetVersionInfo() == td.version {
				continue
			}
			sent, ok := sotwRespond(ctx, w, td)
			if !ok {
				return ctx.Err()
			}
			// An answered watch is spent; one whose names do not exist yet
			// waits for them.
			if sent {
				delete(n.sotw[i], w)
			}
		}
		for w := range n.delta[i] {
			if w.seen == td {
				continue
			}
			sent, ok := deltaRespond(ctx, w, td)
			if !ok {
				return ctx.Err()
			}
			if sent {
				delete(n.delta[i], w)
			}
		}
	}
	return nil
}

// watch answers req at once if the client lacks the current content, else
// opens a watch answered by the next change. It returns the cancel func.
func (n *node) watch(log *slog.Logger, req *gcache.Request, sub gcache.Subscription, ch chan gcache.Response) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := &sotwWatch{req: req, sub: sub, ch: ch}
	td := typeOf(n.res.Load(), req.GetTypeUrl())
	if td == nil {
		return n.add(w)
	}
	if req.GetVersionInfo() == td.version && !sotwMissing(td, sub) {
		return n.add(w)
	}
	if sent, _ := sotwRespond(context.Background(), w, td); !sent {
		// None of the names it asks for exists yet: "if one of those
		// resources springs into existence later, the server must send an
		// update" (xDS protocol).
		return n.add(w)
	}
	return func() {}
}

func (n *node) add(w *sotwWatch) func() {
	set := n.sotwSet(w.req.GetTypeUrl())
	set[w] = struct{}{}
	return func() {
		n.mu.Lock()
		delete(set, w)
		n.mu.Unlock()
	}
}

// sotwMissing reports whether the client lacks a resource it asked for
// (or, for a wildcard, any resource): then a response is due even though
// its version is current.
func sotwMissing(td *typeData, sub gcache.Subscription) bool {
	known := sub.ReturnedResources()
	if sub.IsWildcard() {
		for _, name := range td.names {
			if _, ok := known[name]; !ok {
				return true
			}
		}
		return false
	}
	for name := range sub.SubscribedResources() {
		if _, ok := known[name]; !ok {
			if _, ok := td.items[name]; ok {
				return true
			}
		}
	}
	return false
}

// sotwRespond sends td to w: every resource to a wildcard subscription
// (LDS and CDS with no names, or naming "*"), else those of the names it
// subscribes to that exist. grpc-go subscribes to listeners one dial target
// at a time, and go-control-plane's ADS rule of answering only a request
// that names every resource of the type left such a client waiting for
// ever. A request naming none that exist (or nothing at all: a client no
// longer interested in the type) is not answered; sent is false and the
// watch should wait for a change. ok is false only when ctx ended first.
func sotwRespond(ctx context.Context, w *sotwWatch, td *typeData) (sent, ok bool) {
	resp := &sotwResponse{req: w.req, td: td, anys: td.anys, returned: td.returned}
	if !w.sub.IsWildcard() {
		names := w.sub.SubscribedResources()
		if len(names) != len(td.names) || !hasAll(names, td.names) {
			resp.anys, resp.returned = nil, make(map[string]string, len(names))
			for _, name := range td.names { // sorted, so the response is too
				if _, ok := names[name]; ok {
					resp.anys = append(resp.anys, td.items[name].delta.GetResource())
					resp.returned[name] = td.version
				}
			}
			if len(resp.anys) == 0 {
				return false, true
			}
		}
	}
	// A stream's channel almost always has room: skip the select.
	select {
	case w.ch <- resp:
		return true, true
	default:
	}
	select {
	case w.ch <- resp:
		return true, true
	case <-ctx.Done():
		return false, false
	}
}

func hasAll(set map[string]struct{}, names []string) bool {
	for _, n := range names {
		if _, ok := set[n]; !ok {
			return false
		}
	}
	return true
}

// deltaWatch answers req at once if the client lacks something, else opens
// a watch answered by the next change that concerns it.
func (n *node) deltaWatch(req *gcache.DeltaRequest, sub gcache.Subscription, ch chan gcache.DeltaResponse) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := &deltaWatch{req: req, sub: sub, ch: ch}
	res := n.res.Load()
	if res != nil {
		td := typeOf(res, req.GetTypeUrl())
		if td == nil {
			td = emptyType(req.GetTypeUrl())
		}
		if sent, _ := deltaRespond(context.Background(), w, td); sent {
			// go-control-plane's contract: no watch, nil cancel.
			return nil
		}
	}
	set := n.deltaSet(req.GetTypeUrl())
	set[w] = struct{}{}
	return func() {
		n.mu.Lock()
		delete(set, w)
		n.mu.Unlock()
	}
}

// deltaRespond sends w what changed for it in td, if anything (or, for a
// wildcard subscription's first request, an empty response), with
// go-control-plane's semantics. sent reports a response; ok is false only
// when ctx ended first.
//
// It runs for every open watch of a node whose type changed, one after the
// other under the node's lock, so it only works out what the response
// carries: the client's state after it (a map per stream) is built by the
// response, on the stream's own goroutine, when the server asks for it.
func deltaRespond(ctx context.Context, w *deltaWatch, td *typeData) (sent, ok bool) {
	known := w.sub.ReturnedResources()
	var out []*discovery.Resource
	var removed []string
	wildcard := w.sub.IsWildcard()
	var subscribed map[string]struct{}
	if wildcard {
		// Known names that td also holds; when that is all of them,
		// nothing was removed and known need not be walked.
		held := 0
		for i, name := range td.names {
			it := td.list[i]
			prev, found := known[name]
			if found {
				held++
			}
			if !found || prev != it.hash {
				if out == nil {
					out = make([]*discovery.Resource, 0, len(td.names)-i)
				}
				out = append(out, it.delta)
			}
		}
		if held != len(known) {
			for name := range known {
				if _, ok := td.items[name]; !ok {
					removed = append(removed, name)
				}
			}
		}
	} else {
		subscribed = w.sub.SubscribedResources()
		for name := range subscribed {
			prev, found := known[name]
			if it, ok := td.items[name]; ok {
				if prev != it.hash {
					out = append(out, it.delta)
				}
			} else if found {
				removed = append(removed, name)
			}
		}
	}
	if len(out) == 0 && len(removed) == 0 && (!wildcard || w.req.GetResponseNonce() != "") {
		w.seen = td
		return false, true
	}
	resp := &deltaResponse{req: w.req, version: td.version, resources: out, removed: removed}
	if wildcard {
		// The client holds exactly td after this response: td.hashes,
		// copied when asked for (the server's subscription edits it).
		resp.all = td.hashes
	} else {
		// A named subscription's map is the server's and changes with the
		// stream's next request, so its state is taken now.
		resp.next = make(map[string]string, len(subscribed))
		for name := range subscribed {
			if it, ok := td.items[name]; ok {
				resp.next[name] = it.hash
			}
		}
	}
	// A stream's channel almost always has room: skip the select.
	select {
	case w.ch <- resp:
		return true, true
	default:
	}
	select {
	case w.ch <- resp:
		return true, true
	case <-ctx.Done():
		return false, false
	}
}

// sotwResponse is a SotW response sharing its node's marshaled resources.
// go-control-plane's server writes the nonce into the DiscoveryResponse it
// gets, so each call builds a new one around the shared resources.
type sotwResponse struct {
	req *gcache.Request
	td  *typeData
	// anys and returned are td's, or the subset the request named.
	anys     []*anypb.Any
	returned map[string]string
}

var _ gcache.Response = (*sotwResponse)(nil)

func (r *sotwResponse) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) {
	return &discovery.DiscoveryResponse{VersionInfo: r.td.version, Resources: r.anys, TypeUrl: r.req.GetTypeUrl()}, nil
}

func (r *sotwResponse) GetRequest() *discovery.DiscoveryRequest { return r.req }
func (r *sotwResponse) GetVersion() (string, error)             { return r.td.version, nil }
func (r *sotwResponse) GetResponseVersion() string              { return r.td.version }

// GetContext is the type's context; for a response that carries only the
// named subset of the secrets, one whose PushedSecrets lists just those.
func (r *sotwResponse) GetContext() context.Context {
	hashes, ok := PushedSecrets(r.td.ctx)
	if !ok || len(r.returned) == len(r.td.names) {
		return r.td.ctx
	}
	sub := make(map[string]string, len(r.returned))
	for name := range r.returned {
		if h, ok := hashes[name]; ok {
			sub[name] = h
		}
	}
	return context.WithValue(r.td.ctx, pushedSecretsKey{}, sub)
}

// GetReturnedResources is the client's state after this response; a copy,
// since the server's subscription edits it in place.
func (r *sotwResponse) GetReturnedResources() map[string]string {
	return maps.Clone(r.returned)
}

// deltaResponse is a delta response whose resources are shared with every
// other stream of the node.
type deltaResponse struct {
	req       *gcache.DeltaRequest
	version   string
	resources []*discovery.Resource
	removed   []string
	// next is the client's resource versions after this response. For a
	// wildcard subscription it is a copy of all (a type's shared hashes),
	// made once, when the server first asks: on the stream's goroutine,
	// not in the fan-out loop that answers every stream of the node.
	nextOnce sync.Once
	next     map[string]string
	all      map[string]string
}

var _ gcache.DeltaResponse = (*deltaResponse)(nil)

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discovery.DeltaDiscoveryResponse, error) {
	return &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo: r.version,
		Resources:         r.resources,
		RemovedResources:  r.removed,
		TypeUrl:           r.req.GetTypeUrl(),
	}, nil
}

func (r *deltaResponse) GetDeltaRequest() *discovery.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                 { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                        { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string              { return r.nextVersions() }
func (r *deltaResponse) GetReturnedResources() map[string]string           { return r.nextVersions() }
func (r *deltaResponse) GetContext() context.Context                       { return context.Background() }

// nextVersions is the client's state after this response (the same map on
// every call).
func (r *deltaResponse) nextVersions() map[string]string {
	r.nextOnce.Do(func() {
		if r.all != nil {
			r.next = maps.Clone(r.all)
		}
	})
	return r.next
}
