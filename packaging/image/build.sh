#!/usr/bin/env bash
# Build the driftguard container image (the DaemonSet's image, deploy/kustomize) from this
# checkout's own binaries, as a reproducible OCI image archive:
#
#     packaging/image/build.sh                      # release binaries (built when missing)
#     packaging/image/build.sh --bin-dir target/debug --out /tmp/dg.oci.tar
#
# Writes <target>/image/driftguard-<version>.oci.tar (an OCI image layout in a tar: `skopeo copy
# oci-archive:<file> docker://<registry>/driftguard:<version>`, `podman load -i <file>`,
# `ctr -n k8s.io images import <file>`), named ghcr.io/driftguard/driftguard:<version> unless
# --name is given, and prints the manifest digest (sha256:…) on stdout.
#
# What is in it (one layer, see docs/install.md "The image"):
#   /usr/bin/driftguard, /usr/bin/driftguard-oci-hook   this checkout's binaries, debug info stripped
#   the shared libraries they link (libelf, libz, libgcc_s, libm, libc, the dynamic loader),
#     copied from THIS machine's files (Debian 12's packages libelf1, zlib1g, libgcc-s1, libc6);
#     /usr/share/doc/driftguard/image-libraries.txt names each file's package and version
#   /bin/busybox (Debian's busybox-static) with the applets the init container's
#     node-setup.sh uses, /bin/sh among them
#   /usr/share/driftguard/containerd/base-runtime-spec.json (node-setup.sh's source spec) and
#     /etc/driftguard/config.toml (packaging/config.toml; the DaemonSet mounts its ConfigMap there)
#   /usr/share/doc/driftguard/sbom.spdx.json: the SBOM (packaging/image/sbom.py: every crate linked
#     into the binaries, from Cargo.lock, and the Debian packages above), also written next to the
#     archive as <out without .tar>.spdx.json
#
# Reproducible: the same binaries and host files give the same digest (fixed mtimes =
# SOURCE_DATE_EPOCH or 0, uid/gid 0, sorted entries, gzip without timestamp; tests/packaging/test.sh
# builds twice and compares). Needs python3, busybox-static, binutils (strip), dpkg, cargo.
#
# Options: --bin-dir DIR (driftguard and driftguard-oci-hook; default <target>/release, built with
# `cargo build --release` when missing), --out FILE, --name REF. Environment: CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

log() { echo "packaging/image/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[[ -n $version ]] || die "no version in Cargo.toml"
bin_dir=
out=$target/image/driftguard-$version.oci.tar
name=ghcr.io/driftguard/driftguard:$version
while [[ $# -gt 0 ]]; do
    case $1 in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
done
if [[ -z $bin_dir ]]; then
    bin_dir=$target/release
    if [[ ! -x $bin_dir/driftguard || ! -x $bin_dir/driftguard-oci-hook ]]; then
        log "cargo build --release (driftguard, driftguard-oci-hook) into $target"
        CARGO_TARGET_DIR=$target cargo build --release -p driftguard -p driftguard-oci-hook --bins >&2
    fi
fi
for b in driftguard driftguard-oci-hook; do
    [[ -x $bin_dir/$b ]] || die "$bin_dir/$b missing (cargo build -p $b, or --bin-dir)"
done
[[ -x /bin/busybox ]] || die "/bin/busybox missing (apt-get install busybox-static)"
command -v strip >/dev/null || die "strip missing (apt-get install binutils)"

umask 022
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rootfs=$stage/rootfs
mkdir -p "$rootfs"/{bin,etc/driftguard,usr/bin,usr/share/driftguard/containerd,usr/share/doc/driftguard,proc,sys,dev,run,tmp,host}
chmod 1777 "$rootfs/tmp"
mkdir -p "$rootfs/var"
ln -s ../run "$rootfs/var/run"

for b in driftguard driftguard-oci-hook; do
    strip --strip-debug -o "$rootfs/usr/bin/$b" "$bin_dir/$b"
    chmod 0755 "$rootfs/usr/bin/$b"
done
install -m 0755 /bin/busybox "$rootfs/bin/busybox"
# node-setup.sh's commands (deploy/kustomize/base/node-setup.sh), and ls for a look inside.
for a in sh cat chmod chroot cp grep ls mkdir mv rm sed; do ln -s busybox "$rootfs/bin/$a"; done
install -m 0644 packaging/containerd/base-runtime-spec.json "$rootfs/usr/share/driftguard/containerd/"
install -m 0644 packaging/config.toml "$rootfs/etc/driftguard/config.toml"
install -m 0644 LICENSE "$rootfs/usr/share/doc/driftguard/LICENSE"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

# The libraries the binaries load, at the paths the dynamic loader looks for them, as regular
# files (the soname, not the versioned file name), with the Debian package each came from.
libs_txt=$rootfs/usr/share/doc/driftguard/image-libraries.txt
echo "# file package version (copied from the build machine's Debian packages)" >"$libs_txt"
for lib in $(ldd "$bin_dir/driftguard" "$bin_dir/driftguard-oci-hook" | awk '/^\t/ && $2 == "=>" && $3 ~ /^\// { print $3 } /^\t/ && $1 ~ /^\// { print $1 }' | sort -u); do
    real=$(readlink -f "$lib")
    mkdir -p "$rootfs$(dirname "$lib")"
    install -m 0755 "$real" "$rootfs$lib"
    pkg=$(dpkg -S "$real" 2>/dev/null | head -n1 | cut -d: -f1 || true)
    [[ -n $pkg ]] || pkg=$(dpkg -S "$lib" 2>/dev/null | head -n1 | cut -d: -f1 || true)
    ver=$( [[ -n $pkg ]] && dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || echo unknown)
    echo "$lib ${pkg:-unknown} $ver" >>"$libs_txt"
done
busybox_ver=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
echo "/bin/busybox busybox-static $busybox_ver" >>"$libs_txt"
chmod 0644 "$libs_txt"

# The software bill of materials (SPDX 2.3): the crates linked into the binaries (Cargo.lock)
# and the Debian packages above, inside the image and next to the archive.
sbom=$rootfs/usr/share/doc/driftguard/sbom.spdx.json
python3 packaging/image/sbom.py --name "$name" --version "$version" --epoch "${SOURCE_DATE_EPOCH:-0}" \
    --libraries "$libs_txt" --arch "$(dpkg --print-architecture)" --out "$sbom" || die "packaging/image/sbom.py failed"
chmod 0644 "$sbom"

# The loader in the image must run the binaries there: a missing library fails here, not on a node.
if [[ $(id -u) -eq 0 ]]; then
    for b in driftguard driftguard-oci-hook; do
        chroot "$rootfs" /usr/bin/$b --version >/dev/null 2>&1 || die "/usr/bin/$b does not run inside the image's root (missing library?)"
    done
else
    log "not root: the binaries were not tried inside the image's root (chroot)"
fi

epoch=${SOURCE_DATE_EPOCH:-0}
mkdir -p "$(dirname "$out")"
digest=$(python3 packaging/image/oci.py --rootfs "$rootfs" --out "$out" --name "$name" --version "$version" --epoch "$epoch")
install -m 0644 "$sbom" "${out%.tar}.spdx.json"
log "wrote $out ($name, $digest) and its SBOM ${out%.tar}.spdx.json"
echo "$digest"
