package cache

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// Secret is one SDS secret with a label shown in Status, normally the serial
// number of the certificate it carries. An empty Serial is filled from the
// first inline certificate, if any.
type Secret struct {
	Resource *tlsv3.Secret
	Serial   string
}

// ReferencedSecrets returns the sorted names of SDS secrets that listeners
// and clusters fetch over ADS. Secrets with another (or no) sds_config are
// static or served elsewhere and are not ours to provide.
func ReferencedSecrets(listeners, clusters []types.Resource) ([]string, error) {
	set := map[string]struct{}{}
	for _, r := range clusters {
		c, ok := r.(*clusterv3.Cluster)
		if !ok {
			return nil, fmt.Errorf("cluster resource has type %T", r)
		}
		if err := socketSecrets(c.GetTransportSocket(), set); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		for _, m := range c.GetTransportSocketMatches() {
			if err := socketSecrets(m.GetTransportSocket(), set); err != nil {
				return nil, fmt.Errorf("cluster %q match %q: %w", c.GetName(), m.GetName(), err)
			}
		}
	}
	for _, r := range listeners {
		l, ok := r.(*listenerv3.Listener)
		if !ok {
			return nil, fmt.Errorf("listener resource has type %T", r)
		}
		chains := l.GetFilterChains()
		if d := l.GetDefaultFilterChain(); d != nil {
			chains = append(slices.Clip(chains), d)
		}
		for _, fc := range chains {
			if err := socketSecrets(fc.GetTransportSocket(), set); err != nil {
				return nil, fmt.Errorf("listener %q chain %q: %w", l.GetName(), fc.GetName(), err)
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

func socketSecrets(ts *corev3.TransportSocket, set map[string]struct{}) error {
	tc := ts.GetTypedConfig()
	if tc == nil {
		return nil
	}
	var common *tlsv3.CommonTlsContext
	switch tc.GetTypeUrl() {
	case "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":
		var u tlsv3.UpstreamTlsContext
		if err := tc.UnmarshalTo(&u); err != nil {
			return fmt.Errorf("transport socket: %w", err)
		}
		common = u.GetCommonTlsContext()
	case "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":
		var d tlsv3.DownstreamTlsContext
		if err := tc.UnmarshalTo(&d); err != nil {
			return fmt.Errorf("transport socket: %w", err)
		}
		common = d.GetCommonTlsContext()
		addSDS(d.GetSessionTicketKeysSdsSecretConfig(), set)
	default:
		return nil
	}
	for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
		addSDS(s, set)
	}
	addSDS(common.GetValidationContextSdsSecretConfig(), set)
	addSDS(common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(), set)
	return nil
}

func addSDS(s *tlsv3.SdsSecretConfig, set map[string]struct{}) {
	if s.GetName() != "" && s.GetSdsConfig().GetAds() != nil {
		set[s.GetName()] = struct{}{}
	}
}

// certSerial returns the hex serial of the first inline PEM certificate of a
// secret (identity certificate, else trusted CA), or "".
func certSerial(s *tlsv3.Secret) string {
	var pemBytes []byte
	switch {
	case s.GetTlsCertificate() != nil:
		pemBytes = s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	case s.GetValidationContext() != nil:
		pemBytes = s.GetValidationContext().GetTrustedCa().GetInlineBytes()
	}
	if len(pemBytes) == 0 {
		return ""
	}
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			return ""
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("%x", c.SerialNumber)
	}
}

// checkSecrets ensures the secrets are exactly the referenced set: a missing
// one stalls the proxy's TLS, and with ADS an extra one means go-control-plane
// never answers the secret request (requested names must cover the type).
func checkSecrets(referenced []string, secrets []types.Resource) error {
	have := map[string]bool{}
	for _, r := range secrets {
		if _, ok := r.(*tlsv3.Secret); !ok {
			return fmt.Errorf("secret resource has type %T", r)
		}
		have[secretName(r)] = true
	}
	var missing, extra []string
	ref := map[string]bool{}
	for _, n := range referenced {
		ref[n] = true
		if !have[n] {
			missing = append(missing, n)
		}
	}
	for n := range have {
		if !ref[n] {
			extra = append(extra, n)
		}
	}
	slices.Sort(extra)
	switch {
	case len(missing) > 0 && len(extra) > 0:
		return fmt.Errorf("secrets referenced but missing %q, present but unreferenced %q", missing, extra)
	case len(missing) > 0:
		return fmt.Errorf("secrets referenced but missing: %q", missing)
	case len(extra) > 0:
		return fmt.Errorf("secrets present but unreferenced: %q", extra)
	}
	return nil
}

func secretName(r types.Resource) string {
	if s, ok := r.(*tlsv3.Secret); ok {
		return s.GetName()
	}
	return ""
}
