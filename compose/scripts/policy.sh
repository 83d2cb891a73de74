#!/usr/bin/env bash
# policy.sh: a Rego edit on the host takes effect live, both ways.
#
#  1. As alice (role reader) GET /api/inventory/1 at the edge is denied 403.
#  2. demo_override.rego is copied into policies/envoy/authz/ (mounted into
#     the gatehouse container): once /debug/policy lists it, the very next
#     request is allowed.
#  3. The file is removed: once /debug/policy no longer lists it, the next
#     request is denied again.
# The file is removed however the script ends.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fetch_ca
token="$(get_token)"
auth=(-H "Authorization: Bearer $token" -H 'Accept: application/json')
target="$repo_dir/policies/envoy/authz/demo_override.rego"
timeout="${GATEHOUSE_POLICY_TIMEOUT:-30}"
[[ ! -e "$target" ]] || fail "$target already exists; remove it first"

# wait_policy present|absent waits until /debug/policy does or does not list
# demo_override.rego.
wait_policy() {
	local deadline=$((SECONDS + timeout)) listed
	while :; do
		listed=no
		curl -fsS "$ADMIN/debug/policy" -o "$WORK/policy.json" 2>/dev/null &&
			grep -q 'demo_override\.rego' "$WORK/policy.json" && listed=yes
		if [[ "$1" == present && "$listed" == yes ]] || [[ "$1" == absent && "$listed" == no && -s "$WORK/policy.json" ]]; then
			return 0
		fi
		((SECONDS < deadline)) || {
			show_body "$WORK/policy.json"
			fail "demo_override.rego not $1 in $ADMIN/debug/policy after ${timeout}s"
		}
		sleep 0.5
	done
}

code="$(status GET "$EDGE/api/inventory/1" "$WORK/before.json" "${auth[@]}")"
expect 403 "$code" "$WORK/before.json" "before the edit: GET /api/inventory/1 as reader"

on_exit "rm -f '$target'"
cp "$scripts_dir/demo_override.rego" "$target"
start=$SECONDS
wait_policy present
info "policy reloaded after ~$((SECONDS - start))s: $(tr -d '\n' <"$WORK/policy.json" | sed -n 's/.*"revision" *: *"\([^"]*\)".*/revision \1/p')"
code="$(status GET "$EDGE/api/inventory/1" "$WORK/during.json" "${auth[@]}")"
expect 200 "$code" "$WORK/during.json" "with demo_override.rego: GET /api/inventory/1 as reader"

rm -f "$target"
start=$SECONDS
wait_policy absent
info "policy reloaded after ~$((SECONDS - start))s"
code="$(status GET "$EDGE/api/inventory/1" "$WORK/after.json" "${auth[@]}")"
expect 403 "$code" "$WORK/after.json" "after removing it: GET /api/inventory/1 as reader"
