# Service-to-service access by SPIFFE id. Only identities proven by an mTLS
# peer certificate count: a workload must hold the private key of its SVID.
package envoy.authz

service_grants := {
	# The orders sidecar reads inventory and makes reservations.
	"spiffe://gatehouse.local/sidecar/orders": [
		{"methods": {"GET", "HEAD"}, "path": ["api", "inventory"]},
		{"methods": {"POST", "DELETE"}, "path": ["api", "inventory", "reservations"]},
	],
	# The frontend reads orders on behalf of users.
	"spiffe://gatehouse.local/sidecar/frontend": [{"methods": {"GET", "HEAD"}, "path": ["api", "orders"]}],
}

service_allowed if {
	input.identity.kind == "service"
	input.identity.verified_by == "mtls"
	some grant in service_grants[input.identity.spiffe_id]
	method_in(grant.methods)
	path_under(grant.path)
}
