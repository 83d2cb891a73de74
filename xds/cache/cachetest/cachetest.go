// Package cachetest builds small, valid xDS resource sets for tests of the
// xDS cache and server, so those tests do not depend on the translator.
package cachetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Name is the name of every resource in a Set: listener, route
// configuration, cluster and load assignment are all "greeter", so a gRPC
// client dials xds:///greeter.
const Name = "greeter"

// Secret names referenced by a Set built with TLS.
const (
	CertSecret = "greeter-cert"
	CASecret   = "greeter-ca"
)

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("cachetest: %v", err))
	}
	return a
}

// Listener is a proxyless-gRPC api_listener whose HCM fetches route
// configuration "greeter" over ADS and ends in the router filter.
func Listener() *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ads(),
			RouteConfigName: Name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{
		Name:        Name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// Route sends everything to cluster "greeter".
func Route() *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: Name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    Name,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: Name},
				}},
			}},
		}},
	}
}

// Cluster is an EDS cluster fed over ADS. With tls it also carries an
// UpstreamTlsContext that fetches CertSecret and CASecret over ADS SDS.
func Cluster(tls bool) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 Name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	if tls {
		c.TransportSocket = &corev3.TransportSocket{
			Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
				CommonTlsContext: &tlsv3.CommonTlsContext{
					TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: CertSecret, SdsConfig: ads()}},
					ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
						ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: CASecret, SdsConfig: ads()},
					},
				},
			})},
		}
	}
	return c
}

// Endpoints points cluster "greeter" at the given host:port addresses.
func Endpoints(addrs ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, portStr, err := net.SplitHostPort(a)
		if err != nil {
			panic(fmt.Sprintf("cachetest: address %q: %v", a, err))
		}
		port, err := strconv.ParseUint(portStr, 10, 32)
		if err != nil {
			panic(fmt.Sprintf("cachetest: port %q: %v", a, err))
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       host,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
				}}},
			}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: Name,
		// grpc-go NACKs localities without an id or weight; Envoy does not.
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{Region: "local", Zone: "local"},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints:         lbs,
		}},
	}
}

// Set is a complete, consistent resource set by type. With certs non-nil
// the cluster uses TLS and the set includes its two secrets.
func Set(certs *Certs, addrs ...string) map[resource.Type][]types.Resource {
	m := map[resource.Type][]types.Resource{
		resource.ListenerType: {Listener()},
		resource.RouteType:    {Route()},
		resource.ClusterType:  {Cluster(certs != nil)},
		resource.EndpointType: {Endpoints(addrs...)},
		resource.SecretType:   nil,
	}
	if certs != nil {
		m[resource.SecretType] = []types.Resource{certs.CertSecret(), certs.CASecret()}
	}
	return m
}

// Certs is a throwaway self-signed ECDSA certificate and key.
type Certs struct {
	CertPEM, KeyPEM []byte
	Serial          string // hex, as x509 prints it
}

// NewCerts makes a self-signed certificate with the given serial number.
func NewCerts(serial int64) (*Certs, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "greeter"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return &Certs{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		Serial:  big.NewInt(serial).Text(16),
	}, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// CertSecret is the identity certificate secret.
func (c *Certs) CertSecret() *tlsv3.Secret {
	return &tlsv3.Secret{Name: CertSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(c.CertPEM),
		PrivateKey:       inline(c.KeyPEM),
	}}}
}

// CASecret is the trust bundle secret (the same self-signed certificate).
func (c *Certs) CASecret() *tlsv3.Secret {
	return &tlsv3.Secret{Name: CASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(c.CertPEM),
	}}}
}
