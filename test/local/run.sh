#!/usr/bin/env bash
# run.sh — what `make run` does: Gatehouse (serve), the demo services and Dex
# on this machine, all on loopback (ports in examples/local.yaml), plus the
# Envoy edge and sidecars if an `envoy` binary is on PATH. A smoke check then
# asks Gatehouse for an allowed and a denied decision.
#
#   test/local/run.sh          start, check, keep running until Ctrl-C
#   test/local/run.sh --check  start, check, stop; exit status of the check
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${GATEHOUSE_CACHE:-$repo/.cache}"
work="$cache/run"
mode="${1:-}"
cd "$repo"

mkdir -p "$work/bin" "$work/logs"
echo "run: building gatehouse, the demo service and the smoke check"
go build -o "$work/bin/gatehouse" ./cmd/gatehouse
go build -o "$work/bin/demo" ./test/demo/service
go build -o "$work/bin/smoke" ./test/smoke
dex="$(test/tools/build-dex.sh)"

pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start() { # start NAME CMD...: run in the background, log to $work/logs/NAME.log
	local name="$1"
	shift
	"$@" >"$work/logs/$name.log" 2>&1 &
	pids+=("$!")
	echo "run: started $name (pid $!, log $work/logs/$name.log)"
}

wait_http() { # wait_http URL: until it answers 200, at most 60 s
	for _ in $(seq 1 120); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.5
	done
	echo "run: $1 did not come up; logs are in $work/logs" >&2
	return 1
}

# Dex as in the compose stack, but bound to loopback.
sed 's/0\.0\.0\.0:/127.0.0.1:/' compose/dex/config.yaml >"$work/dex.yaml"
start dex "$dex" serve "$work/dex.yaml"
start orders "$work/bin/demo" --name orders --listen 127.0.0.1:8081 --inventory http://127.0.0.1:15001
start inventory "$work/bin/demo" --name inventory --listen 127.0.0.1:8082
wait_http http://127.0.0.1:5556/dex/.well-known/openid-configuration
start gatehouse "$work/bin/gatehouse" serve --config examples/local.yaml --policies policies --state-dir "$work/state"
wait_http http://127.0.0.1:9901/readyz

if command -v envoy >/dev/null; then
	admin=9902
	for node in edge orders inventory; do
		"$work/bin/gatehouse" bootstrap --config examples/local.yaml --node "$node" \
			--xds 127.0.0.1:18000 --envoy-admin "127.0.0.1:$admin" >"$work/envoy-$node.yaml"
		start "envoy-$node" envoy -c "$work/envoy-$node.yaml" --base-id "$admin"
		admin=$((admin + 1))
	done
	echo "run: Envoy edge on https://localhost:8443 (CA: $work/state/ca/ca.crt)"
else
	cat <<'MSG'
################################################################################
# No `envoy` binary on PATH: Gatehouse, Dex and the demo services run, but no
# proxy does. The checks below talk to Gatehouse directly, as Envoy would.
# For the whole system with real Envoy proxies use the compose route:
#   docker compose -f compose/docker-compose.yaml up --build
# (see compose/README.md), or install Envoy and run `make run` again.
################################################################################
MSG
fi

echo "run: smoke check"
status=0
"$work/bin/smoke" || status=$?
if [[ "$mode" == "--check" ]]; then
	exit "$status"
fi
cat <<MSG
run: everything is up (admin http://127.0.0.1:9901/debug/xds, policies in $repo/policies are live).
run: Ctrl-C stops it all.
MSG
wait
