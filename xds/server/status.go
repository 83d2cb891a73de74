package server

import (
	"encoding/json"
	"net/http"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
)

// StatusHandler serves the cache status as JSON: every known node with its
// open streams, per-type versions (current, sent, ACKed), last NACK with
// its error, and each secret's serial as held, sent and ACKed.
// ?node=ID limits the answer to one node.
func (s *Server) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		nodes := s.cache.Status()
		if id := r.URL.Query().Get("node"); id != "" {
			var one []cache.NodeStatus
			for _, n := range nodes {
				if n.NodeID == id {
					one = append(one, n)
				}
			}
			if len(one) == 0 {
				http.Error(w, "unknown node", http.StatusNotFound)
				return
			}
			nodes = one
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Nodes []cache.NodeStatus `json:"nodes"`
		}{nodes}); err != nil {
			s.log.Debug("xds status: write", "err", err)
		}
	})
}
