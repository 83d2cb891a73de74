#!/usr/bin/env bash
# all.sh runs every compose end-to-end script in order against a running
# stack (docker compose -f compose/docker-compose.yaml up --build --wait),
# runs the rest even when one fails, prints a summary and exits non-zero
# when any failed.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

info "waiting for the stack"
wait_for_stack "${GATEHOUSE_WAIT_SECONDS:-180}"
pass "stack is up: admin ready, Dex answers, the edge serves /healthz"

failed=()
for s in user service rotate policy; do
	echo "=== $s.sh"
	if "$scripts_dir/$s.sh"; then
		echo "=== $s.sh: PASS"
	else
		echo "=== $s.sh: FAIL"
		failed+=("$s.sh")
	fi
done
if ((${#failed[@]} > 0)); then
	fail "${#failed[@]} of 4 scripts failed: ${failed[*]}"
fi
pass "all 4 compose scripts passed"
