// Package policy decides ext_authz requests with OPA Rego policies read from
// a directory. It speaks opa-envoy-plugin's input and result formats so
// existing Envoy policies run unchanged, prepares the query once per policy
// revision, and swaps revisions atomically so evaluation never waits on a
// reload. Every failure — nothing loaded, undefined result, evaluation error,
// malformed result — is a deny.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// DefaultQuery is opa-envoy-plugin's default decision path, kept so its
// policies (package envoy.authz, rule allow) work without configuration.
// The rule may be a boolean or a result object.
const DefaultQuery = "data.envoy.authz.allow"

// DefaultDir is where policies are read from unless WithDir says otherwise.
const DefaultDir = "policies"

// Option configures an Engine.
type Option func(*config)

type config struct {
	dir       string
	query     string
	logger    *slog.Logger
	data      map[string]any
	cacheSize int
}

// WithDir sets the policy directory (default DefaultDir). All *.rego files
// below it are loaded, except *_test.rego and hidden files or directories.
func WithDir(dir string) Option { return func(c *config) { c.dir = dir } }

// WithQuery sets the query whose value is the decision (default
// DefaultQuery), e.g. "data.gatehouse.authz.decision".
func WithQuery(q string) Option { return func(c *config) { c.query = q } }

// WithLogger sets the logger for reloads, denials caused by errors and Rego
// print() output (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithData adds static base documents under data. A data.json, data.yaml or
// data.yml at the root of the policy directory is merged over it; defining
// the same leaf in both is a load error. Data files in sub-directories are
// not read.
func WithData(data map[string]any) Option { return func(c *config) { c.data = data } }

// WithDecisionCache keeps up to n decisions per policy revision, reused for
// requests equal in everything the policy reads (default
// DefaultDecisionCacheSize; 0 turns it off). It is used only when the
// policy is deterministic and reads no per-request value such as the request
// id; Status says whether it is on and why not.
func WithDecisionCache(n int) Option { return func(c *config) { c.cacheSize = n } }

// revision is one loaded policy set. pq is nil when the directory holds no
// policy, which denies everything.
type revision struct {
	pq       *rego.PreparedEvalQuery
	id       string
	files    []string
	loadedAt time.Time
	// reads is what pq can observe of input; inputs are built only that far.
	reads *reads
	// cache is nil when decisions are not reused; noCache says why.
	cache   *decisionCache
	noCache string
}

// Status reports what is being served and what went wrong last.
type Status struct {
	Revision string    `json:"revision,omitempty"`
	LoadedAt time.Time `json:"loaded_at,omitzero"`
	Files    []string  `json:"files"`
	Query    string    `json:"query"`
	// Reads are the input paths the policy can observe; only they are built.
	Reads         []string            `json:"reads,omitempty"`
	DecisionCache DecisionCacheStatus `json:"decision_cache"`
	LastError     string              `json:"last_error,omitempty"`
	LastErrorAt   time.Time           `json:"last_error_at,omitzero"`
}

// DecisionCacheStatus reports the serving revision's decision cache.
type DecisionCacheStatus struct {
	Enabled bool   `json:"enabled"`
	Reason  string `json:"reason,omitempty"` // why it is off
	Entries int    `json:"entries"`
	Hits    uint64 `json:"hits"`   // since start, over all revisions
	Misses  uint64 `json:"misses"` // since start, over all revisions
}

// Engine evaluates requests against the last successfully loaded policies.
// It is safe for concurrent use.
type Engine struct {
	cfg    config
	query  ast.Body
	logger *slog.Logger

	current atomic.Pointer[revision]
	cache   cacheStats
	keys    sync.Pool // *[]byte buffers for decision-cache keys

	reloadMu    sync.Mutex // serialises Reload
	statusMu    sync.Mutex
	lastErr     string
	lastErrorAt time.Time
}

// New builds an engine and loads the policy directory once.
//
// A bad option (e.g. an unparsable query) returns a nil Engine. A failed
// first load returns a usable Engine together with the load error: it denies
// everything with reason "no policy loaded" until a Reload succeeds, so a
// caller may either refuse to start or keep running and wait for a fix.
func New(ctx context.Context, opts ...Option) (*Engine, error) {
	cfg := config{dir: DefaultDir, query: DefaultQuery, cacheSize: DefaultDecisionCacheSize}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	q, err := ast.ParseBodyWithOpts(cfg.query, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("policy/engine.go: query %q: %w", cfg.query, err)
	}
	e := &Engine{
		cfg:    cfg,
		query:  q,
		logger: cfg.logger.With("component", "policy", "dir", cfg.dir),
	}
	e.keys.New = func() any { b := make([]byte, 0, 256); return &b }
	if err := e.Reload(ctx); err != nil {
		return e, err
	}
	return e, nil
}

// Reload re-reads the policy directory, compiles it and prepares the query.
// On any error the previous revision keeps serving and the error, naming
// file:line:col, is returned and recorded in Status. A directory without
// .rego files is a valid state that denies every request.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()

	rev, err := e.load(ctx)
	if err != nil {
		now := time.Now()
		e.statusMu.Lock()
		e.lastErr, e.lastErrorAt = err.Error(), now
		e.statusMu.Unlock()
		keep := ""
		if cur := e.current.Load(); cur != nil {
			keep = cur.id
		}
		e.logger.ErrorContext(ctx, "policy reload failed, keeping last good revision", "error", err, "serving", keep)
		return err
	}
	prev := e.current.Swap(rev)
	e.statusMu.Lock()
	e.lastErr, e.lastErrorAt = "", time.Time{}
	e.statusMu.Unlock()
	if prev == nil || prev.id != rev.id {
		e.logger.InfoContext(ctx, "policy loaded", "revision", rev.id, "files", len(rev.files), "empty", rev.pq == nil)
	}
	return nil
}

func (e *Engine) load(ctx context.Context) (*revision, error) {
	ps, errs := readDir(e.cfg.dir, false, e.cfg.data)
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy/engine.go: loading %s: %w", e.cfg.dir, errors.Join(errs...))
	}
	rev := &revision{id: ps.revision, files: ps.files, loadedAt: time.Now()}
	if cur := e.current.Load(); cur != nil && cur.id == rev.id {
		return cur, nil // unchanged content, e.g. a spurious watch event
	}
	if len(ps.modules) == 0 {
		return rev, nil
	}
	c, errs := compileModules(ps.modules)
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy/engine.go: compiling %s: %w", e.cfg.dir, errors.Join(errs...))
	}
	if ref := queryRef(e.query); ref != nil && len(c.GetRules(ref)) == 0 {
		e.logger.WarnContext(ctx, "no rule defines the decision query; every request will be denied as undefined", "query", e.cfg.query, "revision", rev.id)
	}
	pq, err := rego.New(
		rego.ParsedQuery(e.query),
		rego.Compiler(c),
		rego.Store(inmem.NewFromObject(ps.data)),
		rego.StrictBuiltinErrors(true),
		rego.SetRegoVersion(ast.RegoV1),
		rego.EnablePrintStatements(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy/engine.go: preparing %s in %s: %w", e.cfg.query, e.cfg.dir, errors.Join(fromASTErrors(e.cfg.dir, err)...))
	}
	rev.pq = &pq
	rev.reads = policyReads(c, e.query)
	ok, why := deterministic(c)
	if ok {
		ok, why = rev.reads.cacheable()
	}
	switch {
	case e.cfg.cacheSize <= 0:
		rev.noCache = "disabled by configuration"
	case !ok:
		rev.noCache = why
	default:
		rev.cache = newDecisionCache(e.cfg.cacheSize, &e.cache)
	}
	return rev, nil
}

// queryRef is the ref of a single-ref query such as data.envoy.authz.allow;
// nil for anything more complex, which disables the missing-rule warning.
func queryRef(q ast.Body) ast.Ref {
	if len(q) != 1 {
		return nil
	}
	if t, ok := q[0].Terms.(*ast.Term); ok {
		if r, ok := t.Value.(ast.Ref); ok {
			return r
		}
	}
	return nil
}

// Status reports the serving revision and the last reload error, which is
// cleared by the next successful reload.
func (e *Engine) Status() Status {
	s := Status{Query: e.cfg.query}
	if cur := e.current.Load(); cur != nil {
		s.Revision, s.LoadedAt = cur.id, cur.loadedAt
		s.Files = append([]string(nil), cur.files...)
		if cur.reads != nil {
			s.Reads = cur.reads.paths()
		}
		s.DecisionCache.Reason = cur.noCache
		if c := cur.cache; c != nil {
			s.DecisionCache.Enabled, s.DecisionCache.Entries = true, c.len()
		}
	}
	s.DecisionCache.Hits, s.DecisionCache.Misses = e.cache.hits.Load(), e.cache.misses.Load()
	e.statusMu.Lock()
	s.LastError, s.LastErrorAt = e.lastErr, e.lastErrorAt
	e.statusMu.Unlock()
	return s
}

// EvaluateRequest builds the input for req and id (see BuildInput), as far
// as the serving policy reads it, and evaluates it — or answers from the
// revision's decision cache when an equal request was decided before.
func (e *Engine) EvaluateRequest(ctx context.Context, req *authv3.CheckRequest, id *identity.Identity, opts ...InputOption) (*Decision, error) {
	cfg := newInputConfig(opts)
	cur := e.current.Load() // one revision for building and evaluating
	r := readsAll
	if cur != nil && cur.reads != nil {
		r = cur.reads
	}
	var key []byte
	if cur != nil && cur.cache != nil && req != nil {
		kb := e.keys.Get().(*[]byte)
		defer func() {
			if cap(key) <= maxCacheKeyBytes {
				*kb = key[:0]
			}
			e.keys.Put(kb)
		}()
		var ok bool
		if key, ok = appendKey((*kb)[:0], req, id, r, &cfg); !ok || decodable(req, &cfg) != nil {
			// A request whose input would not build is denied below,
			// whatever a request with the same key was answered.
			key = nil
		} else if ctx.Err() == nil {
			// An expired request is never answered, not even from the cache.
			if d, hit := cur.cache.get(key); hit {
				d.ID = newDecisionID()
				return &d, nil
			}
		}
	}
	input, err := buildInput(req, id, r, &cfg)
	if err != nil {
		rev := ""
		if cur != nil {
			rev = cur.id
		}
		d := deny(newDecisionID(), rev, "invalid request: "+err.Error())
		e.logger.WarnContext(ctx, "request denied: cannot build policy input", "decision_id", d.ID, "error", err)
		return d, fmt.Errorf("%w: %w", ErrInput, err)
	}
	d, err := e.evaluate(ctx, cur, input)
	if err == nil && key != nil {
		cur.cache.put(key, *d)
	}
	return d, err
}

// Evaluate runs the decision query on input. It always returns a non-nil
// Decision, and callers must answer with it: when err is non-nil (wrapping
// ErrNoPolicy, ErrUndefined, ErrEval or ErrInvalidResult) the decision is a
// deny whose Reason says why — err is for logs and metrics, never a reason
// to let Envoy apply its failure mode. The evaluation deadline is ctx's.
func (e *Engine) Evaluate(ctx context.Context, input ast.Value) (*Decision, error) {
	return e.evaluate(ctx, e.current.Load(), input)
}

func (e *Engine) evaluate(ctx context.Context, cur *revision, input ast.Value) (*Decision, error) {
	id := newDecisionID()
	if cur == nil || cur.pq == nil {
		rev := ""
		if cur != nil {
			rev = cur.id
		}
		return deny(id, rev, ErrNoPolicy.Error()), ErrNoPolicy
	}
	if err := ctx.Err(); err != nil {
		// A constant policy would still answer; an expired request must not.
		return e.failed(ctx, id, cur.id, fmt.Errorf("%w: %w", ErrEval, err))
	}
	rs, err := cur.pq.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalPrintHook(printHook{ctx: ctx, logger: e.logger, decisionID: id}),
	)
	if err != nil {
		return e.failed(ctx, id, cur.id, evalError(err))
	}
	switch {
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		return e.failed(ctx, id, cur.id, ErrUndefined)
	case len(rs) > 1:
		return e.failed(ctx, id, cur.id, fmt.Errorf("%w: query produced %d results", ErrInvalidResult, len(rs)))
	}
	d := &Decision{ID: id, Revision: cur.id}
	if err := parseResult(rs[0].Expressions[0].Value, d); err != nil {
		return e.failed(ctx, id, cur.id, err)
	}
	return d, nil
}

func (e *Engine) failed(ctx context.Context, id, rev string, err error) (*Decision, error) {
	e.logger.WarnContext(ctx, "request denied: policy did not decide", "decision_id", id, "revision", rev, "error", err)
	return deny(id, rev, err.Error()), err
}

// evalError is err as it may be logged and put in the decision log. A
// builtin's or type error's message quotes its arguments (to_number:
// parsing "Basic …"), which may be request data such as credentials, so
// only the code, the builtin's name and the policy location are kept.
func evalError(err error) error {
	var te *topdown.Error
	if !errors.As(err, &te) || (te.Code != topdown.BuiltinErr && te.Code != topdown.TypeErr) {
		return fmt.Errorf("%w: %w", ErrEval, err)
	}
	msg := te.Code
	if name, _, ok := strings.Cut(te.Message, ":"); ok && !strings.ContainsAny(name, " \"'") {
		msg += ": " + name
	}
	if te.Location != nil {
		msg += " at " + te.Location.String()
	}
	return fmt.Errorf("%w: %s (message withheld: it may quote request data)", ErrEval, msg)
}

// printHook sends Rego print() output to the log, tagged with the decision.
type printHook struct {
	ctx        context.Context
	logger     *slog.Logger
	decisionID string
}

func (h printHook) Print(pctx print.Context, msg string) error {
	loc := ""
	if pctx.Location != nil {
		loc = pctx.Location.String()
	}
	h.logger.DebugContext(h.ctx, "rego print", "decision_id", h.decisionID, "location", loc, "msg", msg)
	return nil
}
