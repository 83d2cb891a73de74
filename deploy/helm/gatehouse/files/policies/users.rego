# Role-based access for people (input.identity.kind == "user").
package envoy.authz

# role_grants lists, per role, which methods may be used below which path.
role_grants := {
	"reader": [{"methods": {"GET", "HEAD"}, "path": ["api", "orders"]}],
	"writer": [{"methods": {"GET", "HEAD", "POST", "PUT", "PATCH"}, "path": ["api", "orders"]}],
	"admin": [
		{"methods": {"*"}, "path": ["admin"]},
		{"methods": {"*"}, "path": ["api", "orders"]},
	],
}

user_allowed if {
	input.identity.kind == "user"
	some role in input.identity.roles
	some grant in role_grants[role]
	method_in(grant.methods)
	path_under(grant.path)
}
