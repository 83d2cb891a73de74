package server

import (
	"context"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
)

// callbacks turns stream events into status records, metrics and logs.
// go-control-plane calls them synchronously on each stream's goroutine.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.open(ctx, streamKey{id: id}, "sotw")
			return nil
		},
		StreamClosedFunc: func(id int64, _ *core.Node) { s.closed(streamKey{id: id}, "sotw") },
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.open(ctx, streamKey{delta: true, id: id}, "delta")
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { s.closed(streamKey{delta: true, id: id}, "delta") },
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			return s.request(streamKey{id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			return s.request(streamKey{delta: true, id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
		},
		StreamResponseFunc: func(ctx context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			p := cache.Push{TypeURL: resp.GetTypeUrl(), Version: resp.GetVersionInfo()}
			if p.TypeURL != resource.SecretType {
				s.sent(streamKey{id: id}, resp.GetNonce(), p)
				return
			}
			// Gatehouse's cache hands over the secrets' hashes with the
			// response: decoding every secret again for every stream is
			// what a rotation's fan-out would otherwise spend its time on.
			if hashes, ok := cache.PushedSecrets(ctx); ok {
				p.Secrets = hashes
			} else {
				p.Secrets = map[string]string{}
				for _, a := range resp.GetResources() {
					var sec tlsv3.Secret
					if err := a.UnmarshalTo(&sec); err != nil {
						s.log.Warn("xds: undecodable secret in response", "err", err)
						continue
					}
					p.Secrets[sec.GetName()] = gcache.HashResource(a.GetValue())
				}
			}
			s.sent(streamKey{id: id}, resp.GetNonce(), p)
		},
		StreamDeltaResponseFunc: func(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
			p := cache.Push{TypeURL: resp.GetTypeUrl(), Version: resp.GetSystemVersionInfo(), Delta: true}
			if p.TypeURL == resource.SecretType {
				p.Secrets = map[string]string{}
				for _, r := range resp.GetResources() {
					// Delta resource versions are the same per-resource hash.
					p.Secrets[r.GetName()] = r.GetVersion()
				}
				p.Removed = resp.GetRemovedResources()
			}
			s.sent(streamKey{delta: true, id: id}, resp.GetNonce(), p)
		},
	}
}

func (s *Server) open(ctx context.Context, k streamKey, proto string) {
	s.metrics.streams.WithLabelValues(proto).Inc()
	s.streams.store(k, &streamState{ctx: ctx, pending: map[string]pending{}})
}

func (s *Server) closed(k streamKey, proto string) {
	s.metrics.streams.WithLabelValues(proto).Dec()
	st := s.streams.loadAndDelete(k)
	if st == nil {
		return
	}
	st.mu.Lock()
	nodeID := st.node
	st.mu.Unlock()
	if nodeID != "" {
		s.cache.StreamClosed(nodeID)
		s.log.Debug("xds stream closed", "node", nodeID, "stream", k.id, "protocol", proto)
	}
}

func (s *Server) stream(k streamKey) *streamState {
	return s.streams.load(k)
}

// request classifies a request: the answer to the stream's last push of
// its type is an ACK, or a NACK if it carries error_detail. Requests with
// other nonces are initial or stale and say nothing about a push. A stream
// whose node id the authorizer refuses, or that changes its node id, is
// closed by the returned error.
func (s *Server) request(k streamKey, node *core.Node, typeURL, nonce, errMsg string, nack bool) error {
	st := s.stream(k)
	if st == nil {
		return nil
	}
	st.mu.Lock()
	if id := node.GetId(); id != "" && st.node != "" && id != st.node {
		st.mu.Unlock()
		return status.Errorf(codes.PermissionDenied, "node id changed from %q to %q on one stream", st.node, id)
	}
	first := false
	if st.node == "" && node.GetId() != "" {
		if s.opts.authorize != nil {
			if err := s.opts.authorize(st.ctx, node.GetId()); err != nil {
				st.mu.Unlock()
				s.log.Warn("xds stream refused", "node", node.GetId(), "err", err)
				return status.Errorf(codes.PermissionDenied, "node %q: %v", node.GetId(), err)
			}
		}
		st.node, first = node.GetId(), true
	}
	nodeID := st.node
	p, ok := st.pending[typeURL]
	if ok && nonce != "" && nonce == p.nonce {
		delete(st.pending, typeURL)
	} else {
		ok = false
	}
	st.mu.Unlock()

	if first {
		s.cache.StreamOpened(nodeID)
		s.log.Debug("xds stream opened", "node", nodeID, "stream", k.id, "delta", k.delta)
	}
	if !ok {
		return nil
	}
	if nack {
		s.metrics.nack(typeURL).Inc()
		s.cache.RecordNack(nodeID, p.push, nonce, errMsg, s.opts.now())
		s.log.Warn("xds NACK", "node", nodeID, "type", typeLabel(typeURL), "version", p.push.Version, "nonce", nonce, "error", errMsg)
		return nil
	}
	s.metrics.ack(typeURL).Inc()
	s.cache.RecordAck(nodeID, p.push)
	return nil
}

func (s *Server) sent(k streamKey, nonce string, p cache.Push) {
	st := s.stream(k)
	if st == nil {
		return
	}
	st.mu.Lock()
	nodeID := st.node
	st.mu.Unlock()
	if nodeID == "" {
		return
	}
	s.metrics.push(p.TypeURL).Inc()
	p = s.cache.RecordSent(nodeID, p)
	st.mu.Lock()
	st.pending[p.TypeURL] = pending{nonce: nonce, push: p}
	st.mu.Unlock()
}
