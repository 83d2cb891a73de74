package cache

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// NodeStatus is what a node was sent and what it accepted.
type NodeStatus struct {
	NodeID string `json:"node_id"`
	// Streams is the number of open xDS streams for the node.
	Streams int `json:"streams"`
	// Types is keyed by type URL.
	Types map[string]TypeStatus `json:"types"`
	// Secrets is keyed by secret name.
	Secrets map[string]SecretStatus `json:"secrets,omitempty"`
}

// TypeStatus tracks one resource type for a node.
type TypeStatus struct {
	Current       string    `json:"current,omitempty"` // version in the cache now
	Sent          string    `json:"sent,omitempty"`    // version last sent
	Acked         string    `json:"acked,omitempty"`   // version last ACKed
	NackedVersion string    `json:"nacked_version,omitempty"`
	NackNonce     string    `json:"nack_nonce,omitempty"`
	NackError     string    `json:"nack_error,omitempty"`
	NackAt        time.Time `json:"nack_at,omitzero"`
}

// SecretStatus gives the serial label of one secret as held, last sent and
// last ACKed.
type SecretStatus struct {
	Current string `json:"current,omitempty"`
	Sent    string `json:"sent,omitempty"`
	Acked   string `json:"acked,omitempty"`
}

// Push describes one response the server sent to a node.
type Push struct {
	TypeURL string
	// Version is the SotW version_info or the delta system_version_info.
	Version string
	// Delta pushes carry only changed resources; SotW pushes the full set.
	Delta bool
	// Secrets maps each pushed secret name to its ResourceHash.
	Secrets map[string]string
	// Removed lists resources a delta push removed.
	Removed []string
	// Serials maps each pushed secret to its serial label; filled by
	// RecordSent so an ACK later reports what was actually sent.
	Serials map[string]string
}

// nodeStatus is one node's record. Its own mu guards it, taken while the
// cache's statusMu is held for reading, so the node's streams record pushes
// and ACKs without queueing behind every other node's.
type nodeStatus struct {
	mu      sync.Mutex
	streams int
	types   map[string]*TypeStatus
	current map[string]string // secret name → serial in the cache now
	sent    map[string]string // secret name → serial last sent
	acked   map[string]string // secret name → serial last ACKed
	// Labels of the current and the previous secret set, by ResourceHash;
	// the previous set covers a push built just before a rotation.
	labels, prevLabels map[string]string
}

type secretLabel struct{ hash, serial string }

// withStatus runs f on the node's record, creating it, with the record
// locked.
func (c *Cache) withStatus(nodeID string, f func(*nodeStatus)) {
	c.statusMu.RLock()
	if st := c.status[nodeID]; st != nil {
		st.mu.Lock()
		f(st)
		st.mu.Unlock()
		c.statusMu.RUnlock()
		return
	}
	c.statusMu.RUnlock()
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	st := c.status[nodeID]
	if st == nil {
		st = &nodeStatus{types: map[string]*TypeStatus{}, sent: map[string]string{}, acked: map[string]string{}}
		c.status[nodeID] = st
	}
	st.mu.Lock()
	f(st)
	st.mu.Unlock()
}

func (st *nodeStatus) typ(t string) *TypeStatus {
	ts := st.types[t]
	if ts == nil {
		ts = &TypeStatus{}
		st.types[t] = ts
	}
	return ts
}

// secretLabels maps each secret name to its hash and serial label: the
// given serial, else the serial of its inline certificate.
func secretLabels(secrets *typeData, serials map[string]string) (map[string]secretLabel, error) {
	out := make(map[string]secretLabel, len(secrets.items))
	for name, it := range secrets.items {
		sec, ok := it.res.(*tlsv3.Secret)
		if !ok {
			return nil, fmt.Errorf("secret resource has type %T", it.res)
		}
		serial := serials[name]
		if serial == "" {
			serial = it.secretSerial(sec)
		}
		out[name] = secretLabel{hash: it.hash, serial: serial}
	}
	return out, nil
}

func (c *Cache) setLabels(nodeID string, labels map[string]secretLabel) {
	byHash := make(map[string]string, len(labels))
	current := make(map[string]string, len(labels))
	for name, l := range labels {
		byHash[l.hash] = l.serial
		current[name] = l.serial
	}
	c.withStatus(nodeID, func(st *nodeStatus) {
		st.current = current
		st.prevLabels, st.labels = st.labels, byHash
	})
}

func (st *nodeStatus) serial(hash string) string {
	if s, ok := st.labels[hash]; ok {
		return s
	}
	return st.prevLabels[hash]
}

// StreamOpened counts an xDS stream for a node.
func (c *Cache) StreamOpened(nodeID string) {
	c.withStatus(nodeID, func(st *nodeStatus) { st.streams++ })
}

// StreamClosed undoes StreamOpened. When the node's last stream closes and
// the node has no resources (an id that is not, or no longer, in the
// config), the node and its status are forgotten: ids that churn through
// the server (pod names) must not accumulate.
func (c *Cache) StreamClosed(nodeID string) {
	c.statusMu.RLock()
	last := false
	if st := c.status[nodeID]; st != nil {
		st.mu.Lock()
		if st.streams > 0 {
			st.streams--
		}
		last = st.streams == 0
		st.mu.Unlock()
	}
	c.statusMu.RUnlock()
	if last && c.resources(nodeID) == nil {
		c.forgetIdle(nodeID)
	}
}

// forgetIdle drops a node that has neither resources nor streams. setMu
// keeps a SetResources for it from installing into an entry being
// dropped; both checks are repeated under the locks.
func (c *Cache) forgetIdle(nodeID string) {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if st := c.status[nodeID]; st != nil {
		st.mu.Lock()
		streams := st.streams
		st.mu.Unlock()
		if streams > 0 {
			return
		}
	}
	c.mu.Lock()
	if n := c.nodes[nodeID]; n != nil && n.res.Load() != nil {
		c.mu.Unlock()
		return
	}
	delete(c.nodes, nodeID)
	c.mu.Unlock()
	delete(c.status, nodeID)
}

// RecordSent notes a push and returns it with Serials filled in.
func (c *Cache) RecordSent(nodeID string, p Push) Push {
	c.withStatus(nodeID, func(st *nodeStatus) {
		st.typ(p.TypeURL).Sent = p.Version
		if p.TypeURL != resource.SecretType {
			return
		}
		p.Serials = make(map[string]string, len(p.Secrets))
		for name, h := range p.Secrets {
			p.Serials[name] = st.serial(h)
		}
		applySecrets(&st.sent, p)
	})
	return p
}

// RecordAck notes that the node accepted a push.
func (c *Cache) RecordAck(nodeID string, p Push) {
	c.withStatus(nodeID, func(st *nodeStatus) {
		st.typ(p.TypeURL).Acked = p.Version
		if p.TypeURL == resource.SecretType {
			applySecrets(&st.acked, p)
		}
	})
}

// RecordNack notes that the node rejected a push.
func (c *Cache) RecordNack(nodeID string, p Push, nonce, msg string, at time.Time) {
	c.withStatus(nodeID, func(st *nodeStatus) {
		ts := st.typ(p.TypeURL)
		ts.NackedVersion, ts.NackNonce, ts.NackError, ts.NackAt = p.Version, nonce, msg, at
	})
}

// applySecrets folds a push into a name → serial map: a SotW push is the
// full set, a delta push only changes.
func applySecrets(m *map[string]string, p Push) {
	if !p.Delta {
		*m = maps.Clone(p.Serials)
		if *m == nil {
			*m = map[string]string{}
		}
		return
	}
	maps.Copy(*m, p.Serials)
	for _, n := range p.Removed {
		delete(*m, n)
	}
}

// lastSent is the version last sent for a type, across the node's streams.
func (c *Cache) lastSent(nodeID, typeURL string) string {
	c.statusMu.RLock()
	defer c.statusMu.RUnlock()
	st := c.status[nodeID]
	if st == nil {
		return ""
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if ts := st.types[typeURL]; ts != nil {
		return ts.Sent
	}
	return ""
}

// Status lists every node that has resources or has connected, sorted by id.
func (c *Cache) Status() []NodeStatus {
	c.mu.RLock()
	nodes := make(map[string]*nodeResources, len(c.nodes))
	for id, n := range c.nodes {
		if res := n.res.Load(); res != nil {
			nodes[id] = res
		}
	}
	c.mu.RUnlock()

	// Read-locked: pushes and ACKs go on; each node's record is locked
	// while it is copied.
	c.statusMu.RLock()
	defer c.statusMu.RUnlock()
	ids := map[string]struct{}{}
	for id := range nodes {
		ids[id] = struct{}{}
	}
	for id := range c.status {
		ids[id] = struct{}{}
	}
	out := make([]NodeStatus, 0, len(ids))
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		ns := NodeStatus{NodeID: id, Types: map[string]TypeStatus{}}
		st := c.status[id]
		if st != nil {
			st.mu.Lock()
			ns.Streams = st.streams
			for t, ts := range st.types {
				ns.Types[t] = *ts
			}
		}
		secrets := map[string]SecretStatus{}
		if n := nodes[id]; n != nil {
			for t, v := range n.versions {
				ts := ns.Types[t]
				ts.Current = v
				ns.Types[t] = ts
			}
			for _, r := range n.byType[resource.SecretType] {
				name := secretName(r)
				ss := SecretStatus{}
				if st != nil {
					ss.Current = st.current[name]
				}
				secrets[name] = ss
			}
		}
		if st != nil {
			for name, serial := range st.sent {
				ss := secrets[name]
				ss.Sent = serial
				secrets[name] = ss
			}
			for name, serial := range st.acked {
				ss := secrets[name]
				ss.Acked = serial
				secrets[name] = ss
			}
			st.mu.Unlock()
		}
		if len(secrets) > 0 {
			ns.Secrets = secrets
		}
		out = append(out, ns)
	}
	return out
}
