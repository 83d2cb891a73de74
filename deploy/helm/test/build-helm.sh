#!/usr/bin/env bash
# Builds the pinned helm CLI into ${GATEHOUSE_CACHE:-<repo>/.cache}/bin/helm
# unless it is already there at the pinned version, and prints its path.
# The chart tests (deploy/helm/test) call it when helm is missing; CI may
# call it ahead of time to warm the cache. Needs Go and the module proxy.
set -euo pipefail

HELM_VERSION=v3.22.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${GATEHOUSE_CACHE:-$repo/.cache}
bin=$cache/bin
helm=$bin/helm

if [[ -x $helm ]] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  echo "$helm"
  exit 0
fi

mkdir -p "$bin"
echo "build-helm: building helm $HELM_VERSION into $bin (takes a minute or two the first time)" >&2
# Outside any module, so the repository's go.mod is not consulted.
# go install leaves helm's version at "v3.22"; stamp the full version the
# way helm's release builds do, so the check above can be exact.
(cd "$bin" && GOBIN=$bin GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install \
  -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
"$helm" version --template '{{.Version}}' | grep -qx "$HELM_VERSION" || {
  echo "build-helm: $helm does not report $HELM_VERSION" >&2
  exit 1
}
echo "$helm"
