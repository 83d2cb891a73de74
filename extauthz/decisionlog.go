package extauthz

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// logDecision writes one line per decision. It names who, what and why, but
// never a credential: no headers, no query string (tokens travel there too),
// no cookies.
// Nothing is built when the decision logger is off (level above info).
func (s *Server) logDecision(ctx context.Context, req *authv3.CheckRequest, id *identity.Identity, d *policy.Decision, out outcome, elapsed time.Duration) {
	if !s.decisions.Enabled(ctx, slog.LevelInfo) {
		return
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	path, _, _ := strings.Cut(h.GetPath(), "?")
	attrs := []slog.Attr{
		slog.Bool("allowed", out.allowed),
		slog.String("method", h.GetMethod()),
		slog.String("host", h.GetHost()),
		slog.String("path", path),
		slog.Duration("duration", elapsed),
	}
	if !out.allowed {
		attrs = append(attrs, slog.Int("status", out.status), slog.String("reason", out.reason))
	}
	if d != nil {
		attrs = append(attrs, slog.String("decision_id", d.ID), slog.String("policy_revision", d.Revision))
	}
	if id != nil {
		attrs = append(attrs, slog.String("subject", id.Subject), slog.String("kind", string(id.Kind)),
			slog.String("verified_by", string(id.Method)))
		if id.Issuer != "" {
			attrs = append(attrs, slog.String("issuer", id.Issuer))
		}
	}
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		attrs = append(attrs, slog.String("peer", p))
	}
	if u := out.upstream.onBehalfOfSubject; u != "" {
		// A sidecar hop allowed for the user of a verified assertion.
		attrs = append(attrs, slog.String("on_behalf_of", u))
	}
	s.decisions.LogAttrs(ctx, slog.LevelInfo, "decision", attrs...)
}

func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}
