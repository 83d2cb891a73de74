package extauthz

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// deadlinePolicy records the deadline of the context it is asked with and,
// when block is set, waits for that context to end.
type deadlinePolicy struct {
	block    bool
	deadline time.Time
	has      bool
}

func (p *deadlinePolicy) EvaluateRequest(ctx context.Context, _ *authv3.CheckRequest, _ *identity.Identity, _ ...policy.InputOption) (*policy.Decision, error) {
	p.deadline, p.has = ctx.Deadline()
	if p.block {
		<-ctx.Done()
		return &policy.Decision{ID: "d"}, ctx.Err()
	}
	return &policy.Decision{Allowed: true, ID: "d"}, nil
}

// TestCheckDeadline: policy runs under the earlier of the caller's deadline
// and the server's timeout; either ending it is a timeout deny.
func TestCheckDeadline(t *testing.T) {
	const timeout = 500 * time.Millisecond
	tests := []struct {
		name   string
		parent time.Duration // 0: no deadline
		want   time.Duration // from the start of Check
	}{
		{"no caller deadline", 0, timeout},
		{"caller deadline first", 100 * time.Millisecond, 100 * time.Millisecond},
		{"caller deadline later", 5 * time.Second, timeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &deadlinePolicy{}
			s := New(p, WithTimeout(timeout), WithLogger(slog.New(slog.DiscardHandler)))
			ctx := context.Background()
			if tc.parent != 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.parent)
				defer cancel()
			}
			start := time.Now()
			resp, err := s.Check(ctx, request("GET", "/", nil))
			if err != nil || resp.GetOkResponse() == nil {
				t.Fatalf("Check = %v, %v", resp, err)
			}
			if !p.has {
				t.Fatal("policy ran without a deadline")
			}
			if d := p.deadline.Sub(start); d < tc.want-50*time.Millisecond || d > tc.want+50*time.Millisecond {
				t.Errorf("deadline %v after start, want %v", d, tc.want)
			}
		})
	}
	t.Run("caller deadline ends a slow policy", func(t *testing.T) {
		p := &deadlinePolicy{block: true}
		var logged strings.Builder
		s := New(p, WithTimeout(time.Hour), WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		resp, err := s.Check(ctx, request("GET", "/", nil))
		if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 403 {
			t.Fatalf("Check = %v, %v; want a 403 deny", resp, err)
		}
		if !strings.Contains(logged.String(), "timeout: context deadline exceeded") {
			t.Errorf("decision log %q does not name the timeout", logged.String())
		}
	})
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header  string // "" for none
		token   string
		present bool
		err     bool
	}{
		{header: ""},
		{header: "Basic YWxpY2U6c2VjcmV0"},
		{header: "Bearer"},
		{header: "Bearer abc.def.ghi", token: "abc.def.ghi", present: true},
		{header: "bearer abc", token: "abc", present: true},
		{header: "BEARER abc", token: "abc", present: true},
		{header: "Bearer ", present: true, err: true},
		{header: "Bearer a b", present: true, err: true},
		{header: "Bearer a,Bearer b", present: true, err: true},
		{header: "Bearer a\tb", present: true, err: true},
		{header: "Bearer\tabc", present: true, err: true},
		{header: "bearer\t\tabc", present: true, err: true},
		{header: "Bearerabc"},
		{header: "Bearer  a", present: true, err: true},
		{header: "Bearer a\u00a0b", token: "a\u00a0b", present: true}, // not ASCII space: the verifier refuses it
		{header: "Bearer " + strings.Repeat("x", 4096) + ",", present: true, err: true},
	}
	for _, tc := range tests {
		h := map[string]string{}
		if tc.header != "" {
			h["authorization"] = tc.header
		}
		token, present, err := bearerToken(h)
		if token != tc.token || present != tc.present || (err != nil) != tc.err {
			t.Errorf("bearerToken(%.40q) = %q, %v, %v; want %q, %v, err %v", tc.header, token, present, err, tc.token, tc.present, tc.err)
		}
	}
}

// countingHandler counts the records it is asked to handle.
type countingHandler struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestDecisionLogLevel: one decision line at info, with who, what and why
// and no credential; at warn none, and nothing is built for it.
func TestDecisionLogLevel(t *testing.T) {
	req := request("GET", "/api/orders?access_token=secret", map[string]string{"authorization": "Bearer secret"})
	id := &identity.Identity{Kind: identity.KindUser, Subject: "alice", Issuer: "https://idp", Method: identity.MethodJWKS}
	d := &policy.Decision{ID: "d1", Revision: "r1"}
	out := outcome{status: 403, reason: "denied by policy"}

	h := &countingHandler{level: slog.LevelInfo}
	s := New(&deadlinePolicy{}, WithLogger(slog.New(h)))
	s.logDecision(context.Background(), req, id, d, out, time.Millisecond)
	if len(h.recs) != 1 {
		t.Fatalf("%d records at info, want 1", len(h.recs))
	}
	got := map[string]string{}
	h.recs[0].Attrs(func(a slog.Attr) bool { got[a.Key] = a.Value.String(); return true })
	want := map[string]string{
		"allowed": "false", "method": "GET", "host": "shop.example.com", "path": "/api/orders", "status": "403",
		"reason": "denied by policy", "decision_id": "d1", "policy_revision": "r1", "subject": "alice", "kind": "user",
		"verified_by": "jwks", "issuer": "https://idp", "duration": "1ms",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for k, v := range got {
		if strings.Contains(v, "secret") {
			t.Errorf("%s = %q carries the credential", k, v)
		}
	}

	h = &countingHandler{level: slog.LevelWarn}
	s = New(&deadlinePolicy{}, WithLogger(slog.New(h)))
	if n := testing.AllocsPerRun(100, func() {
		s.logDecision(context.Background(), req, id, d, out, time.Millisecond)
	}); n != 0 {
		t.Errorf("disabled decision log allocates %v times", n)
	}
	if len(h.recs) != 0 {
		t.Errorf("%d records at warn, want none", len(h.recs))
	}

	// A sidecar hop allowed on behalf of a user names the user, never the
	// assertion itself.
	h = &countingHandler{level: slog.LevelInfo}
	s = New(&deadlinePolicy{}, WithLogger(slog.New(h)))
	obo := outcome{allowed: true, upstream: upstream{assertion: "eyJ.secret.sig", onBehalfOfSubject: "alice", onBehalfOfRoles: "reader"}}
	s.logDecision(context.Background(), req, id, d, obo, time.Millisecond)
	got = map[string]string{}
	h.recs[0].Attrs(func(a slog.Attr) bool { got[a.Key] = a.Value.String(); return true })
	if got["on_behalf_of"] != "alice" {
		t.Errorf("on_behalf_of = %q, want alice", got["on_behalf_of"])
	}
	for k, v := range got {
		if strings.Contains(v, "secret") {
			t.Errorf("%s = %q carries the assertion", k, v)
		}
	}
}

// TestMetricsSeries: every outcome lands in its own series, statuses
// outside the cached range included, and only observed series exist.
func TestMetricsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	if n := len(gather(t, reg)); n != 0 {
		t.Fatalf("%d series before any Check, want none", n)
	}
	for _, o := range []outcome{
		{allowed: true}, {allowed: true}, {status: 401}, {status: 403}, {status: 403}, {status: 700}, {status: -1}, {status: 0},
	} {
		m.observe(o, time.Millisecond)
	}
	var nilMetrics *Metrics
	nilMetrics.observe(outcome{allowed: true}, time.Millisecond) // records nothing, does not panic

	want := map[string]uint64{
		`gatehouse_authz_decisions_total{result="allow",status="200"}`: 2,
		`gatehouse_authz_decisions_total{result="deny",status="401"}`:  1,
		`gatehouse_authz_decisions_total{result="deny",status="403"}`:  2,
		`gatehouse_authz_decisions_total{result="deny",status="700"}`:  1,
		`gatehouse_authz_decisions_total{result="deny",status="-1"}`:   1,
		`gatehouse_authz_decisions_total{result="deny",status="0"}`:    1,
		`gatehouse_authz_check_duration_seconds{result="allow"}`:       2,
		`gatehouse_authz_check_duration_seconds{result="deny"}`:        6,
	}
	got := gather(t, reg)
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}

// gather returns every series in reg: counters by value, histograms by
// sample count.
func gather(t *testing.T, reg *prometheus.Registry) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = uint64(m.GetCounter().GetValue())
			case dto.MetricType_HISTOGRAM:
				out[key] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	return out
}
