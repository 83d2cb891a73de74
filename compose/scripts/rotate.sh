#!/usr/bin/env bash
# rotate.sh: certificate rotation under load, without restarting Envoy.
#
#  1. Read the serials of the certificates inventory's sidecar and the edge
#     serve, with openssl s_client.
#  2. Start a loop of GET /api/orders/1 at the edge: every request crosses
#     edge → orders sidecar → inventory sidecar, i.e. three mTLS identities.
#  3. POST /debug/rotate on Gatehouse's admin: every workload certificate is
#     re-issued and pushed by SDS.
#  4. Poll until the served serials change; let the loop run a little longer.
#  5. Every request of the loop must have been answered 200, and no Envoy
#     container may have restarted.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fetch_ca
token="$(get_token)"
timeout="${GATEHOUSE_ROTATE_TIMEOUT:-60}"
edge_host="${EDGE#https://}"
edge_host="${edge_host%%:*}"
envoys=(edge orders-sidecar inventory-sidecar)

# started prints "service StartedAt RestartCount" for every Envoy container.
started() {
	local s id
	for s in "${envoys[@]}"; do
		id="$(compose ps -q "$s" 2>/dev/null || true)"
		if [[ -z "$id" ]]; then
			echo "$s unknown"
			continue
		fi
		echo "$s $(docker inspect -f '{{.State.StartedAt}} {{.RestartCount}}' "$id")"
	done
}

before_inv="$(served_serial "$INVENTORY_SIDECAR" inventory)"
before_edge="$(served_serial "$EDGE_ADDR" "$edge_host")"
[[ -n "$before_inv" ]] || fail "cannot read the serial served at $INVENTORY_SIDECAR"
[[ -n "$before_edge" ]] || fail "cannot read the serial served at $EDGE_ADDR"
before_envoys="$(started)"
info "inventory sidecar serves serial $before_inv, edge serves $before_edge"

# The load loop: one status code (or 000 and curl's error) per line.
codes="$WORK/codes"
: >"$codes"
(
	while [[ ! -e "$WORK/stop" ]]; do
		c="$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
			"$EDGE/api/orders/1" 2>>"$WORK/load.err" || true)"
		echo "${c:-000}" >>"$codes"
		sleep 0.1
	done
) &
load_pid=$!
on_exit "touch '$WORK/stop'; wait $load_pid 2>/dev/null"
sleep 2
[[ -s "$codes" ]] || fail "the load loop made no request in 2s"

code="$(curl -sS -o "$WORK/rotate.out" -w '%{http_code}' -X POST "$ADMIN/debug/rotate" 2>"$WORK/rotate.out.err" || true)"
[[ "$code" == 2?? ]] || {
	show_body "$WORK/rotate.out"
	fail "POST $ADMIN/debug/rotate → $code"
}
pass "POST /debug/rotate → $code"

deadline=$((SECONDS + timeout))
after_inv="$before_inv"
after_edge="$before_edge"
while [[ "$after_inv" == "$before_inv" || -z "$after_inv" || "$after_edge" == "$before_edge" || -z "$after_edge" ]]; do
	((SECONDS < deadline)) ||
		fail "${timeout}s after the rotation: inventory sidecar serves '$after_inv' (was $before_inv), edge serves '$after_edge' (was $before_edge)"
	sleep 1
	after_inv="$(served_serial "$INVENTORY_SIDECAR" inventory)"
	after_edge="$(served_serial "$EDGE_ADDR" "$edge_host")"
done
pass "inventory sidecar now serves serial $after_inv (was $before_inv), pushed by SDS"
pass "edge now serves serial $after_edge (was $before_edge), pushed by SDS"
sleep 3
touch "$WORK/stop"
wait "$load_pid" || true

# Where the admin's /debug/xds shows serials, the new one should be ACKed.
if curl -fsS "$ADMIN/debug/xds" -o "$WORK/xds.json" 2>/dev/null; then
	want="$(printf '%s' "$after_inv" | tr 'A-F' 'a-f')"
	if tr 'A-F' 'a-f' <"$WORK/xds.json" | tr -d ':' | grep -q "$want"; then
		info "/debug/xds reports serial $after_inv"
	else
		info "/debug/xds does not spell serial $after_inv in hex; see $ADMIN/debug/xds"
	fi
fi

total="$(wc -l <"$codes" | tr -d ' ')"
bad="$(grep -vc '^200$' "$codes" || true)"
if ((bad > 0)); then
	sort "$codes" | uniq -c | sed 's/^/       | /' >&2
	[[ -s "$WORK/load.err" ]] && show_body "$WORK/load.err"
	fail "$bad of $total requests during the rotation failed"
fi
((total >= 10)) || fail "only $total requests ran during the rotation"
pass "all $total requests during the rotation answered 200"

after_envoys="$(started)"
if [[ "$after_envoys" != "$before_envoys" ]]; then
	printf 'before:\n%s\nafter:\n%s\n' "$before_envoys" "$after_envoys" >&2
	fail "an Envoy container restarted during the rotation"
fi
pass "no Envoy restarted ($(tr '\n' ';' <<<"$after_envoys"))"
