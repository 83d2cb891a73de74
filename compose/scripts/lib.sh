# shellcheck shell=bash
# lib.sh holds what the compose scripts share; source it, do not run it.
# Every address can be overridden from the environment, e.g. to run the
# scripts against a stack published elsewhere.

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
compose_dir="$(cd "$scripts_dir/.." && pwd)"
repo_dir="$(cd "$compose_dir/.." && pwd)"
export scripts_dir compose_dir repo_dir

EDGE="${GATEHOUSE_EDGE:-https://localhost:8443}"
DEX="${GATEHOUSE_DEX:-http://localhost:5556/dex}"
ADMIN="${GATEHOUSE_ADMIN:-http://127.0.0.1:9901}"
# inventory's sidecar inbound listener (mTLS required), published for the
# scripts; its certificate names spiffe://gatehouse.local/sidecar/inventory.
INVENTORY_SIDECAR="${GATEHOUSE_INVENTORY_SIDECAR:-127.0.0.1:15443}"
EDGE_ADDR="${GATEHOUSE_EDGE_ADDR:-127.0.0.1:8443}"
# Dex's static client and user (compose/dex/config.yaml).
CLIENT_ID="${GATEHOUSE_CLIENT_ID:-gatehouse}"
CLIENT_SECRET="${GATEHOUSE_CLIENT_SECRET:-gatehouse-demo-secret}"
USER_LOGIN="${GATEHOUSE_USER:-alice@example.com}"
USER_PASSWORD="${GATEHOUSE_PASSWORD:-password}"
TRUST_DOMAIN="${GATEHOUSE_TRUST_DOMAIN:-gatehouse.local}"
export EDGE DEX ADMIN INVENTORY_SIDECAR EDGE_ADDR CLIENT_ID CLIENT_SECRET USER_LOGIN USER_PASSWORD TRUST_DOMAIN

# WORK is a scratch directory removed when the script exits.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-compose.XXXXXX")"
export WORK
cleanup_hooks=()
on_exit() { cleanup_hooks+=("$1"); }
run_cleanup() {
	local h
	for h in "${cleanup_hooks[@]+"${cleanup_hooks[@]}"}"; do
		eval "$h" || true
	done
	rm -rf "$WORK"
}
trap run_cleanup EXIT

script_name="$(basename "$0" .sh)"
pass() { printf 'PASS [%s] %s\n' "$script_name" "$*"; }
fail() {
	printf 'FAIL [%s] %s\n' "$script_name" "$*" >&2
	exit 1
}
info() { printf '     [%s] %s\n' "$script_name" "$*"; }

compose() { docker compose -f "$compose_dir/docker-compose.yaml" "$@"; }

# show_body FILE prints the first lines of a response body, indented.
show_body() { sed -n '1,40p' "$1" | sed 's/^/       | /' >&2; }

# wait_for_stack [SECONDS] waits until Gatehouse is ready, Dex answers and
# the edge serves /healthz through the orders sidecar; it sets CA.
wait_for_stack() {
	local deadline=$((SECONDS + ${1:-120}))
	local what
	for what in "$ADMIN/readyz" "$DEX/.well-known/openid-configuration"; do
		until curl -fsS -o /dev/null "$what" 2>/dev/null; do
			((SECONDS < deadline)) || fail "timed out waiting for $what"
			sleep 1
		done
	done
	fetch_ca
	until edge_curl -f -o /dev/null "$EDGE/healthz" 2>/dev/null; do
		((SECONDS < deadline)) || fail "timed out waiting for the edge: $EDGE/healthz"
		sleep 1
	done
}

# fetch_ca sets CA to a file holding Gatehouse's CA certificate: the one in
# $GATEHOUSE_CA_FILE, else ca.crt copied out of the gatehouse container's
# state directory. Nothing below uses curl -k against the edge.
fetch_ca() {
	if [[ -n "${GATEHOUSE_CA_FILE:-}" ]]; then
		CA="$GATEHOUSE_CA_FILE"
	else
		CA="$WORK/ca.crt"
		compose cp gatehouse:/var/lib/gatehouse/ca/ca.crt "$CA" >/dev/null 2>&1 ||
			fail "cannot copy ca.crt out of the gatehouse container (is the stack up? or set GATEHOUSE_CA_FILE)"
	fi
	grep -q 'BEGIN CERTIFICATE' "$CA" || fail "$CA holds no PEM certificate"
	export CA
}

# edge_curl runs curl against the edge, trusting Gatehouse's CA only.
edge_curl() { curl -sS --cacert "$CA" "$@"; }

# get_token prints an ID token for the demo user, from Dex's token endpoint
# with the resource owner password grant (oauth2.passwordConnector: local).
get_token() {
	local out="$WORK/token.json" code tok
	code="$(curl -sS -o "$out" -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" \
		--data-urlencode grant_type=password \
		--data-urlencode "username=$USER_LOGIN" \
		--data-urlencode "password=$USER_PASSWORD" \
		--data-urlencode "scope=openid email profile groups" \
		"$DEX/token")" || fail "Dex token endpoint unreachable: $DEX/token"
	[[ "$code" == 200 ]] || {
		show_body "$out"
		fail "Dex password grant answered $code"
	}
	tok="$(tr -d '\n' <"$out" | sed -n 's/.*"id_token" *: *"\([^"]*\)".*/\1/p')"
	[[ -n "$tok" ]] || fail "no id_token in Dex's answer"
	printf '%s' "$tok"
}

# status METHOD URL BODYFILE [curl args...] prints the HTTP status of one
# request to the edge ("000" when curl failed).
status() {
	local method="$1" url="$2" body="$3"
	shift 3
	edge_curl -o "$body" -w '%{http_code}' -X "$method" "$@" "$url" 2>"$body.err" || true
}

# expect WANT GOT BODYFILE WHAT passes or fails one check on a status.
expect() {
	local want="$1" got="$2" body="$3" what="$4"
	if [[ "$got" == "$want" ]]; then
		pass "$what → $got"
	else
		[[ -s "$body" ]] && show_body "$body"
		[[ -s "$body.err" ]] && show_body "$body.err"
		fail "$what → $got, want $want"
	fi
}

# served_serial HOST:PORT SNI prints the serial of the certificate a TLS
# listener presents (also when it then refuses us for lack of a client
# certificate: the server's certificate comes first).
served_serial() {
	local out
	out="$(openssl s_client -connect "$1" -servername "$2" </dev/null 2>/dev/null || true)"
	printf '%s\n' "$out" | openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}

# served_san HOST:PORT SNI prints the subjectAltName of that certificate.
served_san() {
	local out
	out="$(openssl s_client -connect "$1" -servername "$2" </dev/null 2>/dev/null || true)"
	printf '%s\n' "$out" | openssl x509 -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' '
}
