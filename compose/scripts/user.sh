#!/usr/bin/env bash
# user.sh: a person logs in through the edge, browser style, against Dex.
#
#  1. An anonymous API call is answered 401.
#  2. An anonymous page view (Accept: text/html) is redirected to Dex.
#  3. Dex's login form is fetched and posted (alice / password); the
#     redirects lead back through https://localhost:8443/oauth2/callback,
#     where Gatehouse sets its session cookie, to the page first asked for.
#  4. With the cookie jar: GET /api/orders/1 is allowed (alice is a reader),
#     POST /admin/x is denied 403.
#
# Needs the OIDC login of the edge (authz.oidc in compose/gatehouse.yaml).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fetch_ca
jar="$WORK/cookies.txt"
page="$EDGE/api/orders/1"

# 1. Anonymous API request.
code="$(status GET "$page" "$WORK/anon.json" -H 'Accept: application/json')"
expect 401 "$code" "$WORK/anon.json" "anonymous GET /api/orders/1 (API client)"

# 2. Anonymous browser request: a redirect to Dex's authorization endpoint.
code="$(edge_curl -o "$WORK/redirect.html" -D "$WORK/redirect.hdr" -w '%{http_code}' \
	-c "$jar" -b "$jar" -H 'Accept: text/html' "$page")" || fail "edge unreachable: $page"
location="$(tr -d '\r' <"$WORK/redirect.hdr" | sed -n 's/^[Ll]ocation: *//p' | head -n 1)"
case "$code" in
302 | 303 | 307) ;;
*)
	show_body "$WORK/redirect.html"
	fail "anonymous GET $page (browser) → $code, want a redirect to Dex (is authz.oidc configured?)"
	;;
esac
[[ "$location" == "$DEX/auth"* ]] || fail "redirected to '$location', want $DEX/auth?..."
[[ "$location" == *"redirect_uri=https%3A%2F%2Flocalhost%3A8443%2Foauth2%2Fcallback"* ||
	"$location" == *"redirect_uri=https://localhost:8443/oauth2/callback"* ]] ||
	fail "the authorization request does not return to https://localhost:8443/oauth2/callback: $location"
pass "anonymous page view → $code to Dex"

# 3a. Follow Dex to its login form (Dex redirects to its only connector).
out="$(curl -sS -L --max-redirs 10 -c "$jar" -b "$jar" -o "$WORK/form.html" \
	-w '%{http_code} %{url_effective}' "$location")" || fail "Dex unreachable: $location"
form_url="${out#* }"
[[ "${out%% *}" == 200 ]] || {
	show_body "$WORK/form.html"
	fail "Dex login page → ${out%% *} ($form_url)"
}
action="$(grep -o '<form[^>]*action="[^"]*"' "$WORK/form.html" | head -n 1 |
	sed 's/.*action="//; s/"$//; s/&amp;/\&/g')"
[[ -n "$action" ]] || {
	show_body "$WORK/form.html"
	fail "no login form at $form_url"
}
origin="$(printf '%s' "$form_url" | sed -E 's#^(https?://[^/]+).*#\1#')"
case "$action" in
http://* | https://*) post_url="$action" ;;
/*) post_url="$origin$action" ;;
*) post_url="${form_url%/*}/$action" ;;
esac
pass "Dex login form found (posts to ${post_url%%\?*})"

# 3b. Post the credentials and follow every redirect: Dex → approval
#     (skipped) → the edge's /oauth2/callback → the page first asked for.
out="$(curl -sS -L --max-redirs 10 --cacert "$CA" -c "$jar" -b "$jar" -H 'Accept: text/html' \
	--data-urlencode "login=$USER_LOGIN" --data-urlencode "password=$USER_PASSWORD" \
	-o "$WORK/after-login.json" -w '%{http_code} %{url_effective} %{num_redirects}' "$post_url")" ||
	fail "login redirects failed (curl exit $?)"
read -r code final redirects <<<"$out"
if [[ "$code" != 200 || "$final" != "$EDGE"/* || "$final" == *"/oauth2/callback"* ]]; then
	show_body "$WORK/after-login.json"
	fail "after login: $code at $final after $redirects redirects, want 200 back on $EDGE"
fi
[[ "$final" == "$page" ]] || info "note: login returned to $final, not to $page"
pass "logged in as $USER_LOGIN; $redirects redirects back to $final → 200"

# 4. The session at work.
code="$(status GET "$page" "$WORK/orders.json" -b "$jar" -H 'Accept: application/json')"
expect 200 "$code" "$WORK/orders.json" "GET /api/orders/1 with the session"
grep -Eq '"x-gatehouse-kind": *"user"' "$WORK/orders.json" || {
	show_body "$WORK/orders.json"
	fail "orders did not receive x-gatehouse-kind: user"
}
grep -Eq '"x-gatehouse-roles": *"[^"]*reader' "$WORK/orders.json" || {
	show_body "$WORK/orders.json"
	fail "orders did not receive the reader role"
}
subject="$(sed -n 's/.*"x-gatehouse-subject": *"\([^"]*\)".*/\1/p' "$WORK/orders.json" | head -n 1)"
verified="$(sed -n 's/.*"x-gatehouse-verified-by": *"\([^"]*\)".*/\1/p' "$WORK/orders.json" | head -n 1)"
pass "orders saw user ${subject:-?} (verified by ${verified:-?}) with role reader"

code="$(status POST "$EDGE/admin/x" "$WORK/admin.json" -b "$jar" -H 'Accept: application/json' -d '{}')"
expect 403 "$code" "$WORK/admin.json" "POST /admin/x with the session (reader is no admin)"
