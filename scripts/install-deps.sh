#!/usr/bin/env bash
# Install what driftguard needs on Debian 12 (bookworm), as root. Idempotent.
#
#     install-deps.sh           everything to build, run and test (tests/run.sh, .ci/run):
#                               adds the bookworm-backports apt source for qemu
#     install-deps.sh --agent   only what building and running the agent (and its demo) needs:
#                               no apt source is added (the README's quick start)
set -euo pipefail

log() { echo "install-deps: $*" >&2; }
[[ $(id -u) -eq 0 ]] || { log "run as root (or with sudo)"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
agent_only=0
case "${1:-}" in
    --agent) agent_only=1 ;;
    "") ;;
    *) log "unknown option $1 (expected --agent or nothing)"; exit 2 ;;
esac

if [[ $agent_only == 1 ]]; then
    # build: BPF C via clang, libbpf-sys needs libelf/zlib, pkg-config, make; the demo: runc, busybox
    pkgs=(clang llvm libelf-dev zlib1g-dev pkg-config make runc busybox-static)
    missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing: ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v cargo >/dev/null || { log "cargo not found: install a Rust toolchain (>= 1.82), e.g. with rustup (https://rustup.rs)"; exit 1; }
    mountpoint -q /sys/fs/bpf || mount -t bpf -o mode=0700 bpf /sys/fs/bpf || log "could not mount bpffs on /sys/fs/bpf"
    mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security || true
    log "done (agent build and run dependencies)"
    exit 0
fi

# qemu-system-x86 must come from bookworm-backports (the image's qemu-utils is the backports
# build, so bookworm's qemu-system-x86 conflicts with it).
if ! grep -rqsE '(^|[[:space:]])bookworm-backports([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding the bookworm-backports apt source"
    cat >/etc/apt/sources.list.d/driftguard-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

pkgs=(
    # build: BPF C via clang, libbpf-sys needs libelf/zlib, pkg-config, make
    clang llvm libelf-dev zlib1g-dev pkg-config make
    # tests: real container runtimes and the VM initramfs contents
    busybox-static runc podman coreutils binutils xz-utils cpio iproute2 procps
    # tests: a real JIT runtime in a test image (W^X trials; grep's PCRE2 JIT is the other)
    luajit
    # packaging: dpkg-deb / rpm inspection; python3-venv for kubernetes-validate (below)
    dpkg-dev rpm python3-yaml python3-venv
    # tests/cri.rs: k8s-cri compiles the CRI protos at build time; building and importing its
    # OCI images uses tar and sha256sum (coreutils)
    protobuf-compiler tar debian-archive-keyring
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
qemu_ok=0
dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed" && qemu_ok=1

if [[ ${#missing[@]} -gt 0 || $qemu_ok -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ $qemu_ok -eq 0 ]]; then
    log "installing qemu-system-x86 from bookworm-backports"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi

command -v cargo >/dev/null || { log "cargo not found: install a Rust toolchain (>= 1.82), e.g. with rustup"; exit 1; }

# tests/packaging/test.sh validates every rendering of deploy/ (kustomize base and overlays, the
# Helm chart) with kubernetes-validate from PyPI, pinned; it bundles the Kubernetes JSON schemas
# and needs no network when validating. Into a venv of the repository, not the system's Python.
kv_version=1.37.0
venv=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/pyenv
if [[ $("$venv/bin/kubernetes-validate" --version 2>/dev/null) != "$kv_version" ]]; then
    log "installing kubernetes-validate $kv_version into $venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_version"
fi

# bpffs and securityfs are usually mounted by systemd; make sure they are.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || log "could not mount bpffs on /sys/fs/bpf"
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security || true
log "done"
