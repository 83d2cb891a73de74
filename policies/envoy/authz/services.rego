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

# Calls on behalf of a user. input.on_behalf_of is the user of a verified
# Gatehouse assertion the calling service propagated (Gatehouse refuses the
# request before policy if the assertion is invalid, so its presence means
# it verified). Both must be entitled: the caller by SPIFFE id proven by
# mTLS, the user by role.
delegated_grants := {
	# orders may read a user's stock holds at inventory only on behalf of
	# users with role reader.
	"spiffe://gatehouse.local/sidecar/orders": [{"methods": {"GET", "HEAD"}, "path": ["api", "holds"], "roles": {"reader"}}],
}

delegated_allowed if {
	input.identity.kind == "service"
	input.identity.verified_by == "mtls"
	input.on_behalf_of.kind == "user"
	some grant in delegated_grants[input.identity.spiffe_id]
	method_in(grant.methods)
	path_under(grant.path)
	some role in input.on_behalf_of.roles
	role in grant.roles
}
