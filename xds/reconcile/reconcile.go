// Package reconcile keeps what the xDS server serves in step with its two
// sources of change, and is where one config change's path reads in order:
//
//	file ─► config.Load (strict, file:line) ─► translate.Translate
//	     ─► validate.Validate (every node, deep) ─► secrets.Build
//	     ─► cache.SetResources (per-type content-hash versions) ─► push
//
// A change that fails any step is reported and changes nothing: the last
// good resources stay. Certificate rotations take a shorter path: the
// rotated leaf's secrets are rebuilt and pushed with cache.SetSecrets only,
// so listeners and clusters are not resent and no proxy restarts.
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
	return &Reconciler{cache: c, secrets: p, log: log.With("component", "reconcile"), now: time.Now}
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
	res, sets, err := r.prepare(cfg)
	if err != nil {
		r.failLocked(err)
		return err
	}
	for _, id := range sortedNodes(res) {
		if err := r.cache.SetResources(ctx, id, sets[id]); err != nil {
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
	}
	r.applied = res
	r.status.AppliedAt = r.now()
	r.status.Nodes = sortedNodes(res)
	r.status.Secrets = len(res.Secrets)
	r.status.LastError = ""
	r.log.InfoContext(ctx, "mesh config applied", "nodes", len(res.Nodes), "secrets", len(res.Secrets))
	return nil
}

// prepare runs every step that can fail before anything is pushed.
func (r *Reconciler) prepare(cfg *config.Config) (*translate.Result, map[string]map[resource.Type][]types.Resource, error) {
	res, err := translate.Translate(&cfg.Mesh, translate.WithIdentityHeaderPrefix(cfg.Authz.Headers.Prefix))
	if err != nil {
		return nil, nil, err
	}
	sets := make(map[string]map[resource.Type][]types.Resource, len(res.Nodes))
	var errs []error
	for _, id := range sortedNodes(res) {
		nr := res.Nodes[id]
		if err := validate.Validate(nr, nr.SecretNames...); err != nil {
			errs = append(errs, err)
			continue
		}
		secretRes, err := r.nodeSecrets(res, nr)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", id, err))
			continue
		}
		sets[id] = map[resource.Type][]types.Resource{
			resource.ListenerType: nr.Listeners,
			resource.RouteType:    nr.Routes,
			resource.ClusterType:  nr.Clusters,
			resource.EndpointType: nr.Endpoints,
			resource.SecretType:   secretRes,
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return res, sets, nil
}

func (r *Reconciler) nodeSecrets(res *translate.Result, nr *translate.NodeResources) ([]types.Resource, error) {
	built, err := r.secrets.Build(specsOf(res, nr))
	if err != nil {
		return nil, err
	}
	out := make([]types.Resource, len(built))
	for i, s := range built {
		out[i] = s.Resource
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
	for _, id := range sortedNodes(r.applied) {
		nr := r.applied.Nodes[id]
		specs := specsOf(r.applied, nr)
		if spiffeID != "" && !slices.ContainsFunc(specs, func(s translate.SecretSpec) bool {
			return r.secrets.IdentityOf(s) == spiffeID
		}) {
			continue
		}
		built, err := r.secrets.Build(specs)
		if err == nil {
			err = r.cache.SetSecrets(ctx, id, built)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		r.failLocked(err)
		return err
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
	var ids []string
	for _, spec := range r.applied.Secrets {
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
