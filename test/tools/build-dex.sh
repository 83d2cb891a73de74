#!/usr/bin/env bash
# build-dex.sh builds the Dex OIDC provider the Gatehouse OIDC tests run
# against, from the pinned module in test/tools/dex, into
# ${GATEHOUSE_CACHE:-<repo>/.cache}/bin/dex. An existing binary built from
# the same go.sum is reused; a cold build takes about two minutes.
#
# Usage: test/tools/build-dex.sh [-f]   (-f rebuilds even if cached)
# Prints the binary's path on stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GATEHOUSE_CACHE:-$repo/.cache}"
bin="$cache/bin/dex"
stamp="$cache/bin/dex.sum"
mod="$here/dex"
GO="${GO:-go}"

want="$(cd "$mod" && cat go.mod go.sum | sha256sum | cut -d' ' -f1)"
if [[ "${1:-}" != "-f" && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache/bin"
echo "build-dex: building Dex from $mod into $bin (cold build ~2 min)" >&2
tmp="$(mktemp "$cache/bin/.dex.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# Pure Go: the memory storage the tests use needs no cgo (sqlite is stubbed).
(cd "$mod" && CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" "$GO" build -trimpath -o "$tmp" github.com/dexidp/dex/cmd/dex)
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "$want" >"$stamp"
echo "$bin"
