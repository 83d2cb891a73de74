# Copied into policies/envoy/authz/ by compose/scripts/policy.sh and removed
# again when it ends: lets readers GET /api/inventory/..., which
# policies/envoy/authz/users.rego does not. The policy set is an allow-list
# (default allow := false; allow if ...), so a file added beside it can
# widen access; narrowing it means editing the rule that grants.
package envoy.authz

allow if {
	input.identity.kind == "user"
	"reader" in input.identity.roles
	method_in({"GET", "HEAD"})
	path_under(["api", "inventory"])
}
