// Package reconcile keeps what the xDS server serves in step with its two
// sources of change, and is where one config change's path reads in order:
//
//	file ─► config.Load (strict, file:line) ─► translate.Translate
//	     ─► cache.Encode (once per distinct resource)
//	     ─► validate (every node, deep) ─► secrets.Build
//	     ─► cache.SetEncoded (per-type content-hash versions) ─► push
//
// A change that fails any step is reported and changes nothing: the last
// good resources stay.
//
// Work is done once per distinct resource, not once per node: translation
// shares one object between the nodes that get equal content, each object
// is encoded once, and a resource whose content (hash) was already served
// by the last applied change is replaced by that change's object, whose
// deep validation is remembered (validate.Memo) and whose encoding is
// reused. An edit that changes one listener field therefore validates and
// encodes only the resources it changed, then checks each node's
// references as before; types whose content did not change are not
// resent.
//
// Certificate rotations take a shorter path: the rotated leaf's secrets are
// rebuilt and encoded (each once, however many nodes use it) and pushed
// with cache.SetEncodedSecrets only, so listeners and clusters are not
// resent and no proxy restarts.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/secrets"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

// Reconciler applies configs and rotations to a cache.
type Reconciler struct {
	cache   *cache.Cache
	secrets *secrets.Provider
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex // serialises Apply and rotations
	applied *translate.Result
	status  Status
	// memo remembers which resources passed deep validation.
	memo *validate.Memo
	// encoded holds the applied change's resources by type and content
	// hash (secrets also by serial label), so an unchanged resource of the
	// next change becomes the same object.
	encoded map[string]*cache.Encoded
	// rotationFailed: status.LastError is a failed certificate push, which
	// a later full push (Rotated("")) clears as a successful Apply does.
	rotationFailed bool
}

// Status is the outcome of the last attempts, for /debug and readiness.
type Status struct {
	AppliedAt   time.Time `json:"applied_at,omitzero"`
	Nodes       []string  `json:"nodes"`
	Secrets     int       `json:"secrets"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// New returns a Reconciler writing to c, with certificates from p.
func New(c *cache.Cache, p *secrets.Provider, log *slog.Logger) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{
		cache: c, secrets: p, log: log.With("component", "reconcile"), now: time.Now,
		memo: validate.NewMemo(), encoded: map[string]*cache.Encoded{},
	}
}

// Status returns a copy of the current status.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Nodes = slices.Clone(s.Nodes)
	return s
}

// Ready reports nil once a config has been applied.
func (r *Reconciler) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied == nil {
		if r.status.LastError != "" {
			return fmt.Errorf("no mesh config applied: %s", r.status.LastError)
		}
		return errors.New("no mesh config applied yet")
	}
	return nil
}

// LoadFile reads, validates and applies the config file at path.
func (r *Reconciler) LoadFile(ctx context.Context, path string) error {
	cfg, err := config.Load[config.Config](path)
	if err != nil {
		r.fail(err)
		return err
	}
	return r.Apply(ctx, cfg)
}

// Apply translates cfg, validates every node and builds every secret; only
// if all of that succeeds is anything written to the cache.
func (r *Reconciler) Apply(ctx context.Context, cfg *config.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, sets, enc, err := r.prepare(cfg)
	if err != nil {
		r.failLocked(err)
		return err
	}
	r.encoded = enc.next
	for _, id := range sortedNodes(res) {
		if err := r.cache.SetEncoded(ctx, id, sets[id]); err != nil {
			// Validation passed, so this is a bug; earlier nodes already
			// moved on, which is why it is reported loudly.
			err = fmt.Errorf("node %s: cache refused a validated snapshot: %w", id, err)
			r.failLocked(err)
			return err
		}
	}
	if r.applied != nil {
		for id := range r.applied.Nodes {
			if _, still := res.Nodes[id]; !still {
				r.cache.ClearNode(id)
			}
		}
		kept := r.identitiesOf(res)
		for _, id := range r.identitiesOf(r.applied) {
			if _, still := slices.BinarySearch(kept, id); !still {
				r.secrets.Release(id)
			}
		}
	}
	r.applied = res
	r.status.AppliedAt = r.now()
	r.status.Nodes = sortedNodes(res)
	r.status.Secrets = len(res.Secrets)
	r.status.LastError, r.rotationFailed = "", false
	r.log.InfoContext(ctx, "mesh config applied", "nodes", len(res.Nodes), "secrets", len(res.Secrets))
	return nil
}

// prepare runs every step that can fail before anything is pushed.
func (r *Reconciler) prepare(cfg *config.Config) (*translate.Result, map[string]map[resource.Type][]*cache.Encoded, *encoder, error) {
	res, err := translate.Translate(&cfg.Mesh, translate.WithIdentityHeaderPrefix(cfg.Authz.Headers.Prefix))
	if err != nil {
		return nil, nil, nil, err
	}
	r.memo.Next()
	enc := newEncoder(r.encoded)
	sets := make(map[string]map[resource.Type][]*cache.Encoded, len(res.Nodes))
	var errs []error
	for _, id := range sortedNodes(res) {
		set, cn, encErr := enc.node(res.Nodes[id])
		if err := r.memo.Validate(cn, cn.SecretNames...); err != nil {
			errs = append(errs, err)
			continue
		}
		if encErr != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", id, encErr))
			continue
		}
		sets[id] = set
	}
	if len(errs) > 0 {
		return nil, nil, nil, errors.Join(errs...)
	}
	// Secrets last: building them issues leaves (and re-issues those whose
	// names changed), which a config refused above must not do.
	built := r.buildSecrets(res)
	for _, id := range sortedNodes(res) {
		secretRes, err := enc.secrets(res.Nodes[id], built)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", id, err))
			continue
		}
		sets[id][resource.SecretType] = secretRes
	}
	if len(errs) > 0 {
		return nil, nil, nil, errors.Join(errs...)
	}
	return res, sets, enc, nil
}

// built is one secret as the provider built it, or why it could not.
type built struct {
	secret cache.Secret
	err    error
}

// buildSecrets builds every secret the mesh references once: most are
// shared by many nodes (the trust bundle by all).
func (r *Reconciler) buildSecrets(res *translate.Result) map[string]built {
	out := make(map[string]built, len(res.Secrets))
	for name, spec := range res.Secrets {
		out[name] = r.build(spec)
	}
	return out
}

func (r *Reconciler) build(spec translate.SecretSpec) built {
	s, err := r.secrets.Build([]translate.SecretSpec{spec})
	if err != nil {
		return built{err: err}
	}
	return built{secret: s[0]}
}

// encoder encodes one change's resources, each distinct object once, and
// swaps in the last applied change's object for unchanged content.
type encoder struct {
	prev, next map[string]*cache.Encoded
	byObject   map[types.Resource]*cache.Encoded
}

func newEncoder(prev map[string]*cache.Encoded) *encoder {
	return &encoder{prev: prev, next: map[string]*cache.Encoded{}, byObject: map[types.Resource]*cache.Encoded{}}
}

// canonical returns e, or the encoding of equal content seen before.
func (e *encoder) canonical(key string, x *cache.Encoded) *cache.Encoded {
	if old, ok := e.next[key]; ok {
		return old
	}
	if old, ok := e.prev[key]; ok {
		x = old
	}
	e.next[key] = x
	return x
}

func (e *encoder) encode(typeURL string, r types.Resource) (*cache.Encoded, error) {
	if x, ok := e.byObject[r]; ok {
		return x, nil
	}
	x, err := cache.Encode(typeURL, r)
	if err != nil {
		return nil, err
	}
	x = e.canonical(typeURL+"\x00"+x.Hash(), x)
	e.byObject[r] = x
	return x, nil
}

// node encodes a node's resources. It returns them by type and the node
// with each resource replaced by its canonical object, for validation; a
// resource that cannot be encoded stays as it is there, so validation
// names the problem, and the first such error is returned.
func (e *encoder) node(nr *translate.NodeResources) (map[resource.Type][]*cache.Encoded, *translate.NodeResources, error) {
	cn := *nr
	set := make(map[resource.Type][]*cache.Encoded, 5)
	var firstErr error
	for _, t := range []struct {
		typ  resource.Type
		list *[]types.Resource
	}{
		{resource.ListenerType, &cn.Listeners}, {resource.RouteType, &cn.Routes},
		{resource.ClusterType, &cn.Clusters}, {resource.EndpointType, &cn.Endpoints},
	} {
		in := *t.list
		out := make([]types.Resource, len(in))
		list := make([]*cache.Encoded, 0, len(in))
		for i, r := range in {
			out[i] = r
			x, err := e.encode(t.typ, r)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("%s[%d]: %w", t.typ, i, err)
				}
				continue
			}
			out[i] = x.Resource()
			list = append(list, x)
		}
		*t.list = out
		set[t.typ] = list
	}
	return set, &cn, firstErr
}

// secrets encodes the node's secrets from the built ones.
func (e *encoder) secrets(nr *translate.NodeResources, b map[string]built) ([]*cache.Encoded, error) {
	out := make([]*cache.Encoded, 0, len(nr.SecretNames))
	for _, name := range nr.SecretNames {
		s, ok := b[name]
		if !ok {
			return nil, fmt.Errorf("secret %q: no spec", name)
		}
		if s.err != nil {
			return nil, s.err
		}
		if x, ok := e.byObject[s.secret.Resource]; ok {
			out = append(out, x)
			continue
		}
		x, err := cache.EncodeSecret(s.secret)
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", name, err)
		}
		x = e.canonical(resource.SecretType+"\x00"+x.Hash()+"\x00"+s.secret.Serial, x)
		e.byObject[s.secret.Resource] = x
		out = append(out, x)
	}
	return out, nil
}

func specsOf(res *translate.Result, nr *translate.NodeResources) []translate.SecretSpec {
	specs := make([]translate.SecretSpec, 0, len(nr.SecretNames))
	for _, name := range nr.SecretNames {
		specs = append(specs, res.Secrets[name])
	}
	return specs
}

// Rotated pushes the secrets backed by the SPIFFE identity id to every node
// that references them; spiffeID "" means the trust bundle changed (a CA
// rotation) and every secret is rebuilt. Only the secret type changes.
func (r *Reconciler) Rotated(ctx context.Context, spiffeID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied == nil {
		return nil
	}
	var errs []error
	// Each secret is built and encoded once, however many nodes use it.
	b := map[string]built{}
	enc := newEncoder(nil)
	for _, id := range sortedNodes(r.applied) {
		nr := r.applied.Nodes[id]
		specs := specsOf(r.applied, nr)
		if spiffeID != "" && !slices.ContainsFunc(specs, func(s translate.SecretSpec) bool {
			return r.secrets.IdentityOf(s) == spiffeID
		}) {
			continue
		}
		for _, spec := range specs {
			if _, ok := b[spec.Name]; !ok {
				b[spec.Name] = r.build(spec)
			}
		}
		secrets, err := enc.secrets(nr, b)
		if err == nil {
			err = r.cache.SetEncodedSecrets(ctx, id, secrets)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		r.status.LastError, r.status.LastErrorAt = err.Error(), r.now()
		r.rotationFailed = true
		r.log.ErrorContext(ctx, "pushing certificates failed; proxies keep the ones they have", "identity", spiffeID, "err", err)
		return err
	}
	if r.rotationFailed && spiffeID == "" {
		// Every secret was rebuilt and pushed: the failure is behind us.
		r.status.LastError, r.rotationFailed = "", false
	}
	r.log.InfoContext(ctx, "certificates pushed", "identity", spiffeID)
	return nil
}

// NodeIdentity is the SPIFFE id the proxy serving nodeID presents, by the
// applied config; false for a node the config does not name.
func (r *Reconciler) NodeIdentity(nodeID string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied == nil {
		return "", false
	}
	nr, ok := r.applied.Nodes[nodeID]
	if !ok {
		return "", false
	}
	return nr.Identity, true
}

// Identities lists the SPIFFE ids behind the applied config's secrets.
func (r *Reconciler) Identities() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied == nil {
		return nil
	}
	return r.identitiesOf(r.applied)
}

// identitiesOf lists, sorted, the SPIFFE ids behind res's secrets.
func (r *Reconciler) identitiesOf(res *translate.Result) []string {
	var ids []string
	for _, spec := range res.Secrets {
		if id := r.secrets.IdentityOf(spec); id != "" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func (r *Reconciler) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failLocked(err)
}

func (r *Reconciler) failLocked(err error) {
	r.status.LastError = err.Error()
	r.status.LastErrorAt = r.now()
	r.log.Error("mesh config rejected; the last good config stays", "err", err)
}

func sortedNodes(res *translate.Result) []string {
	ids := make([]string, 0, len(res.Nodes))
	for id := range res.Nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
