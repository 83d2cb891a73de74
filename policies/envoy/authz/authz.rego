# Gatehouse example policy, in opa-envoy-plugin's layout: the decision is
# data.envoy.authz.allow, the engine's default query. Everything not allowed
# below is denied.
package envoy.authz

default allow := false

# Public endpoints, for anyone, authenticated or not.
allow if {
	method_in({"GET", "HEAD"})
	public_path
}

# Users, by role (see users.rego).
allow if user_allowed

# Workloads, by SPIFFE id (see services.rego).
allow if service_allowed

# Workloads acting for a user: both entitled (see services.rego).
allow if delegated_allowed

public_path if segments == ["healthz"]

# /public/<something>; /public itself is not a page.
public_path if {
	count(segments) > 1
	path_under(["public"])
}
