package envoy.authz_test

import data.envoy.authz

# req builds input as Gatehouse sends it for a clean path; tests of odd paths
# pass parsed_path exactly as BuildInput produces it (percent-decoded, split
# on "/" after trimming leading slashes).
req(method, path, ident) := object.union(
	{
		"attributes": {"request": {"http": {"method": method, "path": path}}},
		"parsed_path": split(trim_left(path, "/"), "/"),
		"parsed_query": {},
	},
	{"identity": ident | ident != null},
)

raw(method, parsed_path, ident) := {
	"attributes": {"request": {"http": {"method": method}}},
	"parsed_path": parsed_path,
	"identity": ident,
}

user(roles) := {"kind": "user", "subject": "alice", "verified_by": "jwks", "roles": roles}

service(spiffe_id, verified_by) := {
	"kind": "service",
	"subject": spiffe_id,
	"spiffe_id": spiffe_id,
	"verified_by": verified_by,
}

orders_svc := service("spiffe://gatehouse.local/sidecar/orders", "mtls")

test_allowed[name] if {
	some name, c in {
		"healthz anonymous": ["GET", "/healthz", null],
		"public page anonymous": ["GET", "/public/index.html", null],
		"public HEAD": ["HEAD", "/public/css/site.css", null],
		"reader lists orders": ["GET", "/api/orders", user(["reader"])],
		"reader reads order": ["GET", "/api/orders/42", user(["reader"])],
		"writer creates order": ["POST", "/api/orders", user(["writer"])],
		"writer updates order": ["PUT", "/api/orders/42", user(["writer"])],
		"one of many roles": ["POST", "/api/orders/42", user(["reader", "writer"])],
		"admin panel": ["DELETE", "/admin/users/7", user(["admin"])],
		"admin root": ["GET", "/admin", user(["admin"])],
		"orders svc reads inventory": ["GET", "/api/inventory/sku-1", orders_svc],
		"orders svc reserves": ["POST", "/api/inventory/reservations", orders_svc],
		"frontend svc reads orders": ["GET", "/api/orders/1", service("spiffe://gatehouse.local/sidecar/frontend", "mtls")],
		"path with query": ["GET", "/api/orders?limit=5&x=/admin", user(["reader"])],
	}
	inp := req(c[0], split(c[1], "?")[0], c[2])
	authz.allow with input as object.union(inp, {"attributes": {"request": {"http": {"path": c[1]}}}})
}

test_denied[name] if {
	some name, c in {
		"anonymous api": ["GET", "/api/orders", null],
		"public POST": ["POST", "/public/form", null],
		"public root is not a page": ["GET", "/public", null],
		"reader cannot write": ["POST", "/api/orders", user(["reader"])],
		"reader cannot delete": ["DELETE", "/api/orders/42", user(["reader"])],
		"writer cannot delete": ["DELETE", "/api/orders/42", user(["writer"])],
		"reader not admin": ["GET", "/admin", user(["reader"])],
		"no roles": ["GET", "/api/orders", user([])],
		"unknown role": ["GET", "/api/orders", user(["superuser"])],
		"prefix is a whole segment": ["GET", "/api/ordersX", user(["reader"])],
		"service via jwt not mtls": ["GET", "/api/inventory/sku-1", service("spiffe://gatehouse.local/sidecar/orders", "jwks")],
		"orders svc cannot delete stock": ["DELETE", "/api/inventory/sku-1", orders_svc],
		"orders svc not admin": ["GET", "/admin", orders_svc],
		"unknown service": ["GET", "/api/inventory/sku-1", service("spiffe://gatehouse.local/sidecar/evil", "mtls")],
		"other trust domain": ["GET", "/api/inventory/sku-1", service("spiffe://evil.example/sidecar/orders", "mtls")],
		"user claiming spiffe id": ["GET", "/api/inventory/x", object.union(user(["reader"]), {"spiffe_id": "spiffe://gatehouse.local/sidecar/orders", "verified_by": "mtls"})],
		"service claiming roles": ["GET", "/admin", object.union(orders_svc, {"roles": ["admin"]})],
	}
	not authz.allow with input as req(c[0], c[1], c[2])
}

# Paths an upstream might resolve to somewhere other than what the rules
# match, given as the parsed_path BuildInput produces for the raw path.
test_noncanonical_denied[name] if {
	some name, c in {
		"dot dot to admin (/api/orders/../../admin)": ["api", "orders", "..", "..", "admin"],
		"encoded dot dot (/api/orders/%2e%2e/%2e%2e/admin)": ["api", "orders", "..", "..", "admin"],
		"dot segment (/admin/.)": ["api", "orders", "."],
		"empty segment (/api//orders)": ["api", "", "orders"],
		"trailing slash (/api/orders/)": ["api", "orders", ""],
		"path parameter (/api/orders;x=1)": ["api", "orders;x=1"],
		"tomcat dot dot (/api/orders/..;/admin)": ["api", "orders", "..;", "admin"],
		"double encoding (/api/orders/%252e%252e)": ["api", "orders", "%2e%2e"],
		"backslash (/api/orders\\..\\admin)": ["api", "orders\\..\\admin"],
		"NUL byte": ["api", "orders", "1\u0000"],
		"uppercase (/API/orders)": ["API", "orders"],
		"root (/)": [""],
	}
	not authz.allow with input as raw("GET", c, user(["reader", "writer"]))
}

# Case and dot tricks on admin paths, for a non-admin user.
test_admin_bypass_denied[name] if {
	some name, c in {
		"/Admin": ["Admin"],
		"/%61dmin decodes to admin but user is not admin": ["admin"],
		"/admin/.": ["admin", "."],
		"/api/orders/../../admin": ["api", "orders", "..", "..", "admin"],
	}
	not authz.allow with input as raw("GET", c, user(["reader", "writer"]))
}

test_admin_case_sensitive if {
	not authz.allow with input as raw("GET", ["Admin", "users"], user(["admin"]))
}

test_no_input_denied if {
	not authz.allow with input as {}
}

test_undefined_parsed_path_denied if {
	not authz.allow with input as {"attributes": {"request": {"http": {"method": "GET", "path": "/healthz"}}}}
}
