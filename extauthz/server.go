package extauthz

import (
	"context"
	"errors"
	"log/slog"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/gatehouse-proxy/gatehouse/extauthz/assertion"
	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// Policy decides a request. *policy.Engine implements it. The returned
// decision is never nil and is final: on error it is a deny.
type Policy interface {
	EvaluateRequest(ctx context.Context, req *authv3.CheckRequest, id *identity.Identity, opts ...policy.InputOption) (*policy.Decision, error)
}

// AssertionMinter signs the identity an edge decided on for the destination
// service. *assertion.Minter implements it.
type AssertionMinter interface {
	Mint(st assertion.Statement) (string, error)
}

// AssertionVerifier verifies an assertion presented at a sidecar hop.
// *assertion.Verifier implements it; errors are *assertion.Error.
type AssertionVerifier interface {
	Verify(ctx context.Context, token string, hop assertion.Hop) (*assertion.Assertion, error)
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	policy    Policy
	tokens    TokenVerifier
	timeout   time.Duration
	headers   HeaderOptions
	inputOpts []policy.InputOption
	log       *slog.Logger
	decisions *slog.Logger
	metrics   *Metrics
	now       func() time.Time
	login     BrowserLogin      // nil: no browser login (see session.go)
	minter    AssertionMinter   // nil: edges add no assertion (see respond.go)
	asserts   AssertionVerifier // nil: sidecars refuse every assertion
	peers     *identity.PeerCache

	// slotNames are the full names of the headers allow sets, from
	// headers.Prefix (see respond.go).
	slotNames [numSlots]string
}

// HeaderOptions controls the headers an allowed request carries upstream.
type HeaderOptions struct {
	// Prefix of the identity headers; any client-sent header with this
	// prefix is replaced or removed, never passed on.
	Prefix string
	// StripAuthorization removes the Authorization header on allow.
	StripAuthorization bool
}

// Option configures a Server.
type Option func(*Server)

// WithTokenVerifier accepts bearer tokens verified by v. Without it any
// bearer token is rejected.
func WithTokenVerifier(v TokenVerifier) Option { return func(s *Server) { s.tokens = v } }

// WithTimeout bounds one Check, identity and policy included (default 500ms).
func WithTimeout(d time.Duration) Option { return func(s *Server) { s.timeout = d } }

// WithHeaders sets the upstream header options.
func WithHeaders(h HeaderOptions) Option { return func(s *Server) { s.headers = h } }

// WithInputOptions passes options to policy input building (body limits).
func WithInputOptions(o ...policy.InputOption) Option {
	return func(s *Server) { s.inputOpts = append(s.inputOpts, o...) }
}

// WithLogger sets the operational logger; decisions go to the same
// handler under logger "decision".
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithMetrics records decisions and latencies in m.
func WithMetrics(m *Metrics) Option { return func(s *Server) { s.metrics = m } }

// WithAssertions makes edge routes sign the decided identity into the
// assertion header (m) and sidecar routes verify a propagated one (v),
// handing it to policy as input.on_behalf_of. Either may be nil.
func WithAssertions(m AssertionMinter, v AssertionVerifier) Option {
	return func(s *Server) { s.minter, s.asserts = m, v }
}

// New returns a Server that asks p for every decision.
func New(p Policy, opts ...Option) *Server {
	s := &Server{
		policy:  p,
		timeout: 500 * time.Millisecond,
		headers: HeaderOptions{Prefix: "x-gatehouse-"},
		log:     slog.Default(),
		now:     time.Now,
		peers:   identity.NewPeerCache(identity.DefaultPeerCacheSize),
	}
	for _, o := range opts {
		o(s)
	}
	s.decisions = s.log.With("logger", "decision")
	s.slotNames = slotNames(s.headers.Prefix)
	return s
}

// Register adds the Authorization service to g.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// Check answers one ext_authz request. It never returns a gRPC error for a
// decision: Envoy would then apply failure_mode_allow, and the answer must
// come from Gatehouse, so every failure is a deny response.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := s.now()
	// A deadline of the caller's that comes first already bounds the Check
	// (Envoy sends its ext_authz timeout as the gRPC deadline); only a later
	// or missing one needs a timer of ours.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > s.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}

	ls := s.newLoginState(req)
	if resp := s.interceptLogin(ctx, req, ls, start); resp != nil {
		return resp, nil
	}

	id, err := s.identify(ctx, req, ls)
	if err != nil {
		out := outcome{status: 401, reason: "unauthenticated: " + err.Error(), invalidToken: errors.Is(err, errInvalidToken)}
		return s.finish(ctx, req, nil, nil, out, start, ls), nil
	}
	h := hopOf(req)
	obo, err := s.onBehalfOf(ctx, req, h, id)
	if err != nil {
		return s.finish(ctx, req, id, nil, assertionRefused(err), start, ls), nil
	}

	d, err := s.evaluate(ctx, req, id, obo)
	if d == nil { // a Policy that breaks its contract still denies
		d = &policy.Decision{Reason: "policy returned no decision"}
	}
	out := outcome{allowed: d.Allowed && err == nil, reason: d.Reason}
	switch {
	case err != nil:
		out.status, out.reason = 403, "policy error: "+err.Error()
		if ctx.Err() != nil {
			out.reason = "timeout: " + ctx.Err().Error()
		}
	case !d.Allowed && d.HTTPStatus != 0:
		out.status = d.HTTPStatus
	case !d.Allowed && id == nil:
		// Nobody was identified: asking them to authenticate is the useful answer.
		out.status = 401
	case !d.Allowed:
		out.status = 403
	}
	if out.reason == "" && !out.allowed {
		out.reason = "denied by policy"
	}
	if resp := s.challengeLogin(ctx, req, ls, id, d, out, start); resp != nil {
		return resp, nil
	}
	if out.allowed {
		s.propagate(h, id, obo, d, &out)
	}
	return s.finish(ctx, req, id, d, out, start, ls), nil
}

// outcome is what Check decided, before it is shaped into a response.
type outcome struct {
	allowed      bool
	status       int    // HTTP status on deny
	reason       string // for the decision log, never sent to the client
	invalidToken bool   // presented credentials failed verification
	// upstream are the extra headers set on allow: the assertion and whom
	// the request is on behalf of.
	upstream upstream
}

func (s *Server) finish(ctx context.Context, req *authv3.CheckRequest, id *identity.Identity, d *policy.Decision, out outcome, start time.Time, ls *loginState) *authv3.CheckResponse {
	var resp *authv3.CheckResponse
	if out.allowed {
		resp = s.allow(req, id, d, out.upstream)
	} else {
		resp = s.deny(d, out)
	}
	s.addLoginHeaders(req, ls, resp)
	elapsed := s.now().Sub(start)
	s.logDecision(ctx, req, id, d, out, elapsed)
	s.metrics.observe(out, elapsed)
	return resp
}
