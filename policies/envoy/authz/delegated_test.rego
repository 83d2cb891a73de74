package envoy.authz_test

import data.envoy.authz

# on_behalf_of is the user of a verified Gatehouse assertion, as the sidecar's
# ext_authz hands it to policy.
on_behalf_of(roles) := {
	"kind": "user",
	"subject": "alice",
	"verified_by": "jwks",
	"roles": roles,
	"assertion": {"audience": "spiffe://gatehouse.local/sidecar/orders"},
}

delegated(method, path, caller, obo) := object.union(req(method, path, caller), {"on_behalf_of": obo})

test_delegated_allowed[name] if {
	some name, c in {
		"orders reads holds for a reader": ["GET", "/api/holds/alice", on_behalf_of(["reader"])],
		"reader among other roles": ["HEAD", "/api/holds", on_behalf_of(["writer", "reader"])],
	}
	authz.allow with input as delegated(c[0], c[1], orders_svc, c[2])
}

test_delegated_denied[name] if {
	some name, c in {
		"user without role reader": [orders_svc, "GET", "/api/holds/alice", on_behalf_of(["writer"])],
		"user without roles": [orders_svc, "GET", "/api/holds/alice", on_behalf_of([])],
		"no user at all": [orders_svc, "GET", "/api/holds/alice", null],
		"method not granted": [orders_svc, "DELETE", "/api/holds/alice", on_behalf_of(["reader"])],
		"caller not granted": [service("spiffe://gatehouse.local/sidecar/payments", "mtls"), "GET", "/api/holds/alice", on_behalf_of(["reader"])],
		"caller not proven by mtls": [service("spiffe://gatehouse.local/sidecar/orders", "jwks"), "GET", "/api/holds/alice", on_behalf_of(["reader"])],
		"a user calling directly": [user(["reader"]), "GET", "/api/holds/alice", on_behalf_of(["reader"])],
		"on behalf of a service": [orders_svc, "GET", "/api/holds/alice", object.union(on_behalf_of(["reader"]), {"kind": "service"})],
	}
	inp := object.union(req(c[1], c[2], c[0]), {"on_behalf_of": c[3]})
	not authz.allow with input as object.remove(inp, {k | some k in {"on_behalf_of"}; c[3] == null})
}
