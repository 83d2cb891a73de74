#!/usr/bin/env bash
# service.sh: service to service over mTLS, authorized by SPIFFE id.
#
#  1. A user's GET /api/orders/1 at the edge makes orders call inventory
#     through its sidecar (127.0.0.1:15001 → mTLS → inventory's sidecar);
#     inventory sees the caller as spiffe://<td>/sidecar/orders, verified by
#     mTLS, and the call is allowed by policies/envoy/authz/services.rego.
#  2. The same user asking inventory directly at the edge is denied: the
#     reader role does not cover /api/inventory; only orders' SPIFFE id does.
#     The edge's signed user assertion travels along (1b).
#  3. A caller without a client certificate is refused by inventory's sidecar
#     inbound listener at the TLS handshake, with or without a valid bearer
#     token.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fetch_ca
token="$(get_token)"
pass "got an ID token for $USER_LOGIN from Dex (password grant)"
auth=(-H "Authorization: Bearer $token" -H 'Accept: application/json')
orders_id="spiffe://$TRUST_DOMAIN/sidecar/orders"
inventory_id="spiffe://$TRUST_DOMAIN/sidecar/inventory"

# 1. The fan-out.
code="$(status GET "$EDGE/api/orders/1" "$WORK/orders.json" "${auth[@]}")"
expect 200 "$code" "$WORK/orders.json" "GET /api/orders/1 as $USER_LOGIN (orders → inventory)"
sed -n '/"inventory": {/,$p' "$WORK/orders.json" >"$WORK/inventory-part.json"
grep -Eq '"status": *200' "$WORK/inventory-part.json" || {
	show_body "$WORK/orders.json"
	fail "orders' call to inventory did not succeed"
}
grep -Eq "\"x-gatehouse-spiffe-id\": *\"$orders_id\"" "$WORK/inventory-part.json" || {
	show_body "$WORK/orders.json"
	fail "inventory did not see the caller as $orders_id"
}
grep -Eq '"x-gatehouse-verified-by": *"mtls"' "$WORK/inventory-part.json" || {
	show_body "$WORK/orders.json"
	fail "inventory's caller was not verified by mTLS"
}
grep -Eq "\"x-forwarded-client-cert\": *\"[^\"]*URI=$orders_id" "$WORK/inventory-part.json" || {
	show_body "$WORK/orders.json"
	fail "inventory's sidecar did not forward the client certificate's URI ($orders_id)"
}
pass "inventory saw $orders_id, verified by mTLS, in x-gatehouse-spiffe-id and x-forwarded-client-cert"

# 1b. The user's identity travels with the fan-out: the edge added a signed
#     x-gatehouse-assertion for orders; orders forwarded it to inventory,
#     whose ext_authz verified it (aud orders, presented by orders, chain
#     orders → inventory) and named the user.
grep -Eq '"assertion": *true' "$WORK/orders.json" || {
	show_body "$WORK/orders.json"
	fail "orders did not receive the edge's x-gatehouse-assertion"
}
grep -Eq '"assertion": *true' "$WORK/inventory-part.json" || {
	show_body "$WORK/orders.json"
	fail "orders received the assertion but inventory did not"
}
pass "the edge's signed assertion reached orders and, forwarded by orders, inventory"

# 2. The user cannot do what orders' identity may.
code="$(status GET "$EDGE/api/inventory/1" "$WORK/inventory.json" "${auth[@]}")"
expect 403 "$code" "$WORK/inventory.json" "GET /api/inventory/1 as $USER_LOGIN directly (role reader)"

# 3. No client certificate, no entry. The listener is up and presents
#    inventory's SPIFFE certificate...
san="$(served_san "$INVENTORY_SIDECAR" inventory)"
[[ "$san" == *"URI:$inventory_id"* ]] || fail "inventory's sidecar at $INVENTORY_SIDECAR presents '$san', want URI:$inventory_id"
pass "inventory's sidecar presents URI:$inventory_id"
# ...but refuses the handshake without ours. -k: the only thing missing is
# the client certificate (the server's has no DNS name to verify anyway).
for with_token in no yes; do
	args=(-sS -k -o "$WORK/direct.out" -w '%{http_code}')
	[[ "$with_token" == yes ]] && args+=(-H "Authorization: Bearer $token")
	rc=0
	got="$(curl "${args[@]}" "https://$INVENTORY_SIDECAR/api/inventory/1" 2>"$WORK/direct.err")" || rc=$?
	if ((rc == 0)); then
		show_body "$WORK/direct.out"
		fail "inventory's sidecar answered HTTP $got to a caller without a certificate (bearer token: $with_token)"
	fi
	pass "no client certificate (bearer token: $with_token) → refused, curl exit $rc: $(head -n 1 "$WORK/direct.err")"
done
