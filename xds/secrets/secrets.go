// Package secrets turns the secret names a translated mesh references into
// SDS Secret resources, with certificates from Gatehouse's CA: one workload
// certificate per SPIFFE identity, a server certificate per edge TLS name,
// and the CA trust bundle. The certs.Rotator re-issues leaves before they
// expire; whoever owns the cache pushes the rebuilt secrets (SDS only, no
// listener change, no restart).
package secrets

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

// Bundle is the source of the trust bundle; *certs.CA implements it.
type Bundle interface {
	TrustBundle() []byte
	TrustDomain() string
}

// Overrides are operator-provided certificates that take the place of
// issued ones; *certs.DirSource implements it (files <name>.crt/.key, see
// OverrideName).
type Overrides interface {
	Get(name string) (*certs.Leaf, bool)
}

// Provider builds secrets. It is safe for concurrent use.
type Provider struct {
	bundle    Bundle
	leaves    *certs.Rotator
	ttl       time.Duration
	overrides Overrides
	log       *slog.Logger
}

// Option configures a Provider.
type Option func(*Provider)

// WithTTL sets the lifetime of issued leaves (default 24h; re-issued at 2/3).
func WithTTL(d time.Duration) Option { return func(p *Provider) { p.ttl = d } }

// WithOverrides serves certificates from o where it has one for a secret's
// identity, instead of issuing.
func WithOverrides(o Overrides) Option { return func(p *Provider) { p.overrides = o } }

// WithLogger sets the logger for rejected overrides.
func WithLogger(l *slog.Logger) Option { return func(p *Provider) { p.log = l } }

// New returns a Provider issuing through rot and trusting bundle.
func New(bundle Bundle, rot *certs.Rotator, opts ...Option) *Provider {
	p := &Provider{bundle: bundle, leaves: rot, ttl: 24 * time.Hour, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Release stops keeping and renewing the leaf of spiffeID: no secret of
// the applied config references it any more (a service removed or
// renamed). Without it, config churn would fill the Rotator up to its
// bound and new identities would then get no certificate.
func (p *Provider) Release(spiffeID string) { p.leaves.Forget(spiffeID) }

// EdgeSPIFFEID is the identity an edge's public server certificate is
// issued under: spiffe://<trust-domain>/edge-tls/<cert name>. It differs
// from the edge's own workload identity (spiffe://<td>/edge/<name>), which
// it presents to mTLS services, so the two leaves never share one rotator
// entry with different DNS names.
func EdgeSPIFFEID(trustDomain, cert string) string {
	return "spiffe://" + trustDomain + "/edge-tls/" + cert
}

// OverrideName is the file name (without .crt/.key) of the operator-provided
// certificate for a SPIFFE id: its path with "/" as ".", e.g.
// spiffe://td/sidecar/orders → "sidecar.orders", and an edge's TLS
// certificate spiffe://td/edge-tls/edge → "edge-tls.edge".
func OverrideName(spiffeID string) string {
	rest := strings.TrimPrefix(spiffeID, "spiffe://")
	_, path, _ := strings.Cut(rest, "/")
	return strings.ReplaceAll(path, "/", ".")
}

// IdentityOf returns the SPIFFE id whose leaf backs the secret, or "" for
// the trust bundle. Rotation events are matched to secrets with it.
func (p *Provider) IdentityOf(spec translate.SecretSpec) string {
	switch spec.Kind {
	case translate.SecretWorkload:
		return spec.SPIFFEID
	case translate.SecretEdgeServer:
		cert, _ := translate.IsEdgeServerSecretName(spec.Name)
		return EdgeSPIFFEID(p.bundle.TrustDomain(), cert)
	}
	return ""
}

// Build returns the secrets named by specs, issuing leaves that do not
// exist yet. The result is sorted by name.
func (p *Provider) Build(specs []translate.SecretSpec) ([]cache.Secret, error) {
	out := make([]cache.Secret, 0, len(specs))
	for _, spec := range specs {
		s, err := p.build(spec)
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", spec.Name, err)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b cache.Secret) int {
		switch {
		case a.Resource.Name < b.Resource.Name:
			return -1
		case a.Resource.Name > b.Resource.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

func (p *Provider) build(spec translate.SecretSpec) (cache.Secret, error) {
	switch spec.Kind {
	case translate.SecretTrustBundle:
		return cache.Secret{Resource: &tlsv3.Secret{
			Name: spec.Name,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(p.bundle.TrustBundle()),
			}},
		}}, nil
	case translate.SecretWorkload, translate.SecretEdgeServer:
		id := p.IdentityOf(spec)
		if leaf := p.override(id); leaf != nil {
			return tlsSecret(spec.Name, leaf), nil
		}
		opts := []certs.IssueOption{certs.WithTTL(p.ttl)}
		if len(spec.DNSNames) > 0 {
			opts = append(opts, certs.WithDNSNames(spec.DNSNames...))
		}
		leaf, err := p.leaves.Get(id, opts...)
		if err != nil {
			return cache.Secret{}, err
		}
		return tlsSecret(spec.Name, leaf), nil
	}
	return cache.Secret{}, fmt.Errorf("unknown secret kind %q", spec.Kind)
}

// override returns the operator's certificate for id, if there is one and
// it is for id: a certificate for another identity is never served.
func (p *Provider) override(id string) *certs.Leaf {
	if p.overrides == nil {
		return nil
	}
	name := OverrideName(id)
	leaf, ok := p.overrides.Get(name)
	if !ok {
		return nil
	}
	if leaf.SPIFFEID != id {
		p.log.Error("operator certificate ignored: its SPIFFE id does not match its file name",
			"file", name, "want", id, "got", leaf.SPIFFEID)
		return nil
	}
	return leaf
}

func tlsSecret(name string, leaf *certs.Leaf) cache.Secret {
	return cache.Secret{Serial: leaf.Serial, Resource: &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(leaf.ChainPEM),
			PrivateKey:       inline(leaf.KeyPEM),
		}},
	}}
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
