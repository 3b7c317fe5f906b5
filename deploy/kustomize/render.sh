#!/usr/bin/env bash
# Write deploy/daemonset.yaml: deploy/kustomize/base rendered by kustomize, for
# `kubectl apply -f deploy/daemonset.yaml`. Run it after changing the base (or a file the base
# generates its ConfigMap from); tests/packaging/test.sh fails while the two differ.
#
#     deploy/kustomize/render.sh
#
# kustomize: $KUSTOMIZE, else .cache/kustomize (scripts/install-containerd.sh kustomize fetches
# Debian's), else the one on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
k=${KUSTOMIZE:-}
[[ -n $k ]] || { [[ -x .cache/kustomize/root/usr/bin/kustomize ]] && k=.cache/kustomize/root/usr/bin/kustomize; }
[[ -n $k ]] || k=$(command -v kustomize || true)
[[ -n $k ]] || { echo "deploy/kustomize/render.sh: no kustomize (scripts/install-containerd.sh kustomize)" >&2; exit 1; }
out=deploy/daemonset.yaml
{
    cat <<'HDR'
# GENERATED from deploy/kustomize/base by deploy/kustomize/render.sh: edit the base, not this file.
# driftguard on a Kubernetes cluster, one agent per node (docs/install.md, "Install on a cluster"):
#
#     kubectl apply -f deploy/daemonset.yaml      # the same as: kubectl apply -k deploy/kustomize/base
#
# The base's files explain each setting; deploy/kustomize/overlays has variants (prometheus,
# privileged, an image pinned by digest). ghcr.io/driftguard/driftguard:<version> is the name
# packaging/image/build.sh gives the image it builds: push it to your registry and use that name.
HDR
    "$k" build deploy/kustomize/base
} >"$out.new"
mv "$out.new" "$out"
echo "deploy/kustomize/render.sh: wrote $out" >&2
