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
		StreamResponseFunc: func(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			p := cache.Push{TypeURL: resp.GetTypeUrl(), Version: resp.GetVersionInfo()}
			if p.TypeURL == resource.SecretType {
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
	s.mu.Lock()
	s.streams[k] = &streamState{ctx: ctx, pending: map[string]pending{}}
	s.mu.Unlock()
}

func (s *Server) closed(k streamKey, proto string) {
	s.metrics.streams.WithLabelValues(proto).Dec()
	s.mu.Lock()
	st := s.streams[k]
	delete(s.streams, k)
	s.mu.Unlock()
	if st != nil && st.node != "" {
		s.cache.StreamClosed(st.node)
		s.log.Debug("xds stream closed", "node", st.node, "stream", k.id, "protocol", proto)
	}
}

// request classifies a request: the answer to the stream's last push of
// its type is an ACK, or a NACK if it carries error_detail. Requests with
// other nonces are initial or stale and say nothing about a push. A stream
// whose node id the authorizer refuses, or that changes its node id, is
// closed by the returned error.
func (s *Server) request(k streamKey, node *core.Node, typeURL, nonce, errMsg string, nack bool) error {
	s.mu.Lock()
	st := s.streams[k]
	if st == nil {
		s.mu.Unlock()
		return nil
	}
	if id := node.GetId(); id != "" && st.node != "" && id != st.node {
		s.mu.Unlock()
		return status.Errorf(codes.PermissionDenied, "node id changed from %q to %q on one stream", st.node, id)
	}
	first := false
	if st.node == "" && node.GetId() != "" {
		if s.opts.authorize != nil {
			if err := s.opts.authorize(st.ctx, node.GetId()); err != nil {
				s.mu.Unlock()
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
	s.mu.Unlock()

	if first {
		s.cache.StreamOpened(nodeID)
		s.log.Debug("xds stream opened", "node", nodeID, "stream", k.id, "delta", k.delta)
	}
	if !ok {
		return nil
	}
	t := typeLabel(typeURL)
	if nack {
		s.metrics.nacks.WithLabelValues(t).Inc()
		s.cache.RecordNack(nodeID, p.push, nonce, errMsg, s.opts.now())
		s.log.Warn("xds NACK", "node", nodeID, "type", t, "version", p.push.Version, "nonce", nonce, "error", errMsg)
		return nil
	}
	s.metrics.acks.WithLabelValues(t).Inc()
	s.cache.RecordAck(nodeID, p.push)
	return nil
}

func (s *Server) sent(k streamKey, nonce string, p cache.Push) {
	s.mu.Lock()
	st := s.streams[k]
	nodeID := ""
	if st != nil {
		nodeID = st.node
	}
	s.mu.Unlock()
	if st == nil || nodeID == "" {
		return
	}
	s.metrics.pushes.WithLabelValues(typeLabel(p.TypeURL)).Inc()
	p = s.cache.RecordSent(nodeID, p)
	s.mu.Lock()
	st.pending[p.TypeURL] = pending{nonce: nonce, push: p}
	s.mu.Unlock()
}
