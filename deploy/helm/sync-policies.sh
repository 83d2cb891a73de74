#!/usr/bin/env bash
# Copies the repository's example policies (policies/envoy/authz/*.rego,
# tests excluded) into the chart (gatehouse/files/policies/), removing chart
# copies of policies that no longer exist. The chart tests
# (TestPoliciesMatchRepo) fail until this has been run after a policy edit.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/../../policies/envoy/authz
dst=$here/gatehouse/files/policies
mkdir -p "$dst"
for f in "$dst"/*.rego; do
  [[ -e $f ]] || continue
  [[ -e $src/$(basename "$f") ]] || rm -v "$f"
done
for f in "$src"/*.rego; do
  case $f in *_test.rego) continue ;; esac
  cp "$f" "$dst/"
done
echo "sync-policies: $(ls "$dst" | wc -l) policies in $dst"
