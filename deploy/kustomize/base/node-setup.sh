#!/bin/sh
# driftguard node setup: the DaemonSet's init container. The one copy: the kustomize base puts
# it into ConfigMap driftguard-config (configMapGenerator), the Helm chart reads it through the
# symlink deploy/helm/driftguard/files/node-setup.sh.
#
# Makes container start fail closed on a containerd node (docs/install.md, "Install on a
# cluster"): installs driftguard-oci-hook, the config it reads and a base runtime spec that runs
# it under $PREFIX on the node, then prints the containerd config change that puts the spec in
# use. It never edits containerd's config and never restarts containerd: a pod cannot safely
# restart the runtime it runs on. Apply the printed keys through your node image or machine
# configuration; `driftguard check` (item containerd_hook) then reports it in place.
#
# Environment (defaults are the DaemonSet's): HOST_ROOT (the node's / as mounted here), PREFIX
# (on the node), SRC_HOOK, SRC_SPEC, SRC_CONFIG (in the image / ConfigMap).
set -eu
host=${HOST_ROOT:-/host}
prefix=${PREFIX:-/opt/driftguard}
src_hook=${SRC_HOOK:-/usr/bin/driftguard-oci-hook}
src_spec=${SRC_SPEC:-/usr/share/driftguard/containerd/base-runtime-spec.json}
src_config=${SRC_CONFIG:-/etc/driftguard/config.toml}
say() { echo "driftguard node setup: $*" >&2; }
dest=${host%/}$prefix

mkdir -p "$dest/bin" "$dest/containerd"
chmod 0755 "$dest" "$dest/bin" "$dest/containerd"

# 1. The hook binary. It runs on the node, with the node's libc: try it there first, and never
#    replace a working hook with one that cannot run (runc would then refuse every container).
cp "$src_hook" "$dest/bin/.driftguard-oci-hook.new"
chmod 0755 "$dest/bin/.driftguard-oci-hook.new"
if [ "$host" = / ]; then
    try="$prefix/bin/.driftguard-oci-hook.new --version"
else
    try="chroot $host $prefix/bin/.driftguard-oci-hook.new --version"
fi
if ! version=$($try 2>&1); then
    rm -f "$dest/bin/.driftguard-oci-hook.new"
    say "ERROR: $src_hook from this image does not run on the node ($version); NOT installed."
    say "Containers of opted-in pods start without their policy while the agent is down (fail open)."
    exit 0
fi
# rename(2): a hook that runs right now keeps its file.
mv -f "$dest/bin/.driftguard-oci-hook.new" "$dest/bin/driftguard-oci-hook"

# 2. The config the hook reads: the agent's (same pin dir, failure policy, default mode).
cp "$src_config" "$dest/.config.toml.new"
chmod 0644 "$dest/.config.toml.new"
mv -f "$dest/.config.toml.new" "$dest/config.toml"

# 3. The base runtime spec: the packaged one with the hook at $prefix/bin and --config added.
spec=$dest/containerd/base-runtime-spec.json
sed -e "s#\"/usr/bin/driftguard-oci-hook\"#\"$prefix/bin/driftguard-oci-hook\"#" \
    -e "s#^\\([[:space:]]*\\)\"create-runtime\"[[:space:]]*\$#\\1\"create-runtime\", \"--config\", \"$prefix/config.toml\"#" \
    -e "s#^\\([[:space:]]*\\)\"poststop\"[[:space:]]*\$#\\1\"poststop\", \"--config\", \"$prefix/config.toml\"#" \
    "$src_spec" >"$spec.new"
n=$(grep -c -- "\"--config\", \"$prefix/config.toml\"" "$spec.new" || true)
if [ "$n" != 2 ]; then
    rm -f "$spec.new"
    say "ERROR: $src_spec does not have the expected hook entries ($n of 2 rewritten); spec NOT installed."
    exit 0
fi
chmod 0644 "$spec.new"
mv -f "$spec.new" "$spec"

# 4. The containerd change, for the node's config version.
ctd_config=${host%/}/etc/containerd/config.toml
section='io.containerd.grpc.v1.cri'
[ -f "$ctd_config" ] && grep -Eq '^[[:space:]]*version[[:space:]]*=[[:space:]]*3' "$ctd_config" &&
    section='io.containerd.cri.v1.runtime'
snippet=$dest/containerd/oci-hook.toml
cat >"$snippet.new" <<EOF
# Add these three keys to the runc runtime section of /etc/containerd/config.toml (the section
# exists in most configs: add the keys to it), then restart containerd.
[plugins."$section".containerd.runtimes.runc]
  base_runtime_spec = "$prefix/containerd/base-runtime-spec.json"
  pod_annotations = ["driftguard.dev/*"]
  container_annotations = ["driftguard.dev/*"]
EOF
mv -f "$snippet.new" "$snippet"
say "installed $version at $prefix/bin/driftguard-oci-hook, $prefix/config.toml, $prefix/containerd/base-runtime-spec.json"
if [ -f "$ctd_config" ] && grep -q "$prefix/containerd/base-runtime-spec.json" "$ctd_config"; then
    say "containerd's config uses $prefix/containerd/base-runtime-spec.json: container start is fail closed (check: driftguard check)"
else
    say "containerd does not use the hook yet: container start is fail OPEN while the agent is down. Change, on the node:"
    cat "$snippet" >&2
fi
