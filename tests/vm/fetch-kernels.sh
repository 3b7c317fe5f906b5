#!/usr/bin/env bash
# Fetch the Debian cloud kernels used by the qemu VM tests (tests/support/vm.rs).
#
#   5.10  linux-image-5.10.0-*-cloud-amd64       (bullseye, through a private apt configuration)
#   6.1   linux-image-6.1.0-*-cloud-amd64        (bookworm / bookworm-security)
#   6.12  linux-image-6.12.*+deb12-cloud-amd64   (bookworm-backports)
#
# All have CONFIG_BPF_LSM=y and BTF; overlayfs is a module. 6.1 and 6.12 have "bpf" in the
# default LSM list; 5.10 does not, so its cache dir gets a `cmdline` file with the lsm= list
# that tests/support/vm.rs appends to the kernel command line.
# Result, per kernel, in ${DRIFTGUARD_VM_CACHE:-<repo>/.vm-cache}/<name>/:
#   vmlinuz, overlay.ko and binfmt_misc.ko (uncompressed), version (kernel release, `uname -r`), package (name=version),
#   cmdline (optional, extra kernel command line)
#
# Idempotent: a kernel whose cache dir is complete is not fetched again (no apt-get update, no
# download). Set DRIFTGUARD_VM_REFRESH=1 to re-resolve the current package names and refetch when
# they changed. Runs as root (uses apt-get); installs nothing system-wide except the backports
# apt source when it is missing. Bullseye is never added to the system's apt sources: its package
# lists live in <cache>/.apt-bullseye and are used for `apt-get download` only, so nothing on the
# host can be upgraded from it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${DRIFTGUARD_VM_CACHE:-$repo/.vm-cache}"
refresh="${DRIFTGUARD_VM_REFRESH:-0}"
kernels_spec="${DRIFTGUARD_VM_KERNELS:-5.10 6.1 6.12}"
read -r -a kernels <<<"${kernels_spec//,/ }"

log() { echo "fetch-kernels: $*" >&2; }

# unpack_ko SRC DEST: a module from the package, decompressed (the guest's init insmods it)
unpack_ko() {
    case "$1" in
    *.ko.xz) xz -dc "$1" >"$2" ;;
    *.ko.zst) zstd -dc "$1" >"$2" ;;
    *.ko.gz) gzip -dc "$1" >"$2" ;;
    *) cp "$1" "$2" ;;
    esac
}
die() { log "ERROR: $*"; exit 1; }

complete() {
    local d="$cache/$1"
    [[ -s "$d/vmlinuz" && -s "$d/overlay.ko" && -s "$d/version" ]] || return 1
    # binfmt_misc: the user-namespace binfmt_misc trial (6.7+) needs it loaded in the guest
    [[ -s "$d/binfmt_misc.ko" || -e "$d/binfmt_misc.builtin" ]] || return 1
    # 5.10 cannot run BPF LSM without its lsm= command line
    [[ $1 != 5.10 || -s "$d/cmdline" ]]
}

need=()
for k in "${kernels[@]}"; do
    if [[ "$refresh" != 1 ]] && complete "$k"; then
        log "$k: cached ($(cat "$cache/$k/version")) in $cache/$k"
    else
        need+=("$k")
    fi
done
if [[ ${#need[@]} -eq 0 ]]; then
    log "nothing to do"
    exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found (Debian/Ubuntu host required)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get update / download)"

# --- apt source for bookworm-backports -------------------------------------------------------
updated=0
apt_update() {
    if [[ $updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        updated=1
    fi
}

has_backports() {
    grep -rqsE '(^|[[:space:]])bookworm-backports([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}
if ! has_backports; then
    # Same mirror as the main bookworm source when we can find it.
    mirror="$(grep -rhsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -v -- '-security' | grep -m1 debian || true)"
    if [[ -z "$mirror" ]]; then
        mirror="$(grep -hsE '^deb[[:space:]]' /etc/apt/sources.list 2>/dev/null |
            awk '{print $2}' | grep -v -- '-security' | grep -m1 debian || true)"
    fi
    mirror="${mirror:-http://deb.debian.org/debian}"
    log "adding bookworm-backports apt source ($mirror) at /etc/apt/sources.list.d/backports.sources"
    cat >/etc/apt/sources.list.d/backports.sources <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_update
fi

# --- resolve concrete package names ---------------------------------------------------------
# `apt-cache madison linux-image-cloud-amd64` lines: "pkg | version | URI suite/main amd64 Packages".
# 6.1: the newest version from bookworm or bookworm-security (not backports).
# 6.12: the newest version from bookworm-backports.
meta_version() {
    local want="$1"
    apt-cache madison linux-image-cloud-amd64 2>/dev/null | awk -F'|' -v want="$want" '
        { v=$2; s=$3; gsub(/ /,"",v);
          split(s, a, " "); suite=a[2]; sub(/\/.*/, "", suite);
          if (want == "backports" && suite == "bookworm-backports") print v;
          if (want == "stable" && (suite == "bookworm" || suite == "bookworm-security" || suite == "bookworm-updates")) print v; }' |
        sort -V -r | head -n1
}
image_pkg() {
    local which="$1" prefix="$2" v dep
    v="$(meta_version "$which")"
    if [[ -z "$v" ]]; then
        apt_update
        v="$(meta_version "$which")"
    fi
    [[ -n "$v" ]] || die "cannot find linux-image-cloud-amd64 in $which"
    dep="$(apt-cache show "linux-image-cloud-amd64=$v" | sed -n 's/^Depends: //p' | head -n1 |
        tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -m1 "^linux-image-$prefix" || true)"
    [[ -n "$dep" ]] || die "linux-image-cloud-amd64=$v does not depend on linux-image-$prefix*"
    echo "$dep=$v"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
chown _apt "$work" 2>/dev/null || true

# --- bullseye (5.10) through a private apt configuration --------------------------------------
# Own sources list, package lists and cache under <cache>/.apt-bullseye: the system's apt state is
# not touched, so nothing can be installed or upgraded from bullseye by accident.
bullseye_opts=()
bullseye_setup() {
    [[ ${#bullseye_opts[@]} -eq 0 ]] || return 0
    local a="$cache/.apt-bullseye" keyring=/usr/share/keyrings/debian-archive-keyring.gpg m
    [[ -f $keyring ]] || die "$keyring missing (apt-get install debian-archive-keyring)"
    m="${DRIFTGUARD_DEBIAN_MIRROR:-$(grep -rhsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -v -- '-security' | grep -m1 debian || true)}"
    m="${m:-http://deb.debian.org/debian}"
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
    echo "deb [signed-by=$keyring] ${m%/} bullseye main" >"$a/sources.list"
    bullseye_opts=(
        -o "Dir::Etc::sourcelist=$a/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache"
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
        -o "Acquire::Languages=none" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root"
    )
    log "5.10: apt-get update of bullseye ($m, private lists in $a)"
    apt-get "${bullseye_opts[@]}" update -qq >&2 || die "apt-get update of bullseye failed"
}
bullseye_pkg() {
    local v dep
    bullseye_setup
    v="$(apt-cache "${bullseye_opts[@]}" policy linux-image-cloud-amd64 | awk '/Candidate:/ { print $2 }')"
    [[ -n $v && $v != "(none)" ]] || die "no linux-image-cloud-amd64 in bullseye"
    dep="$(apt-cache "${bullseye_opts[@]}" show "linux-image-cloud-amd64=$v" | sed -n 's/^Depends: //p' |
        head -n1 | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -m1 '^linux-image-5\.10\.' || true)"
    [[ -n "$dep" ]] || die "bullseye linux-image-cloud-amd64=$v does not depend on linux-image-5.10.*"
    v="$(apt-cache "${bullseye_opts[@]}" policy "$dep" | awk '/Candidate:/ { print $2 }')"
    echo "$dep=$v"
}

# Set up in this shell, not in the $(bullseye_pkg) subshell, so the download below can use it.
for k in "${need[@]}"; do [[ $k == 5.10 ]] && bullseye_setup; done

for k in "${need[@]}"; do
    case "$k" in
    5.10) spec="$(bullseye_pkg)" ;;
    6.1) spec="$(image_pkg stable 6.1.)" ;;
    6.12) spec="$(image_pkg backports 6.12.)" ;;
    *) die "unknown kernel name '$k' (known: 5.10 6.1 6.12)" ;;
    esac
    pkg="${spec%%=*}"
    d="$cache/$k"
    if complete "$k" && [[ "$(cat "$d/package" 2>/dev/null)" == "$spec" ]]; then
        log "$k: $spec already cached"
        continue
    fi
    log "$k: downloading $spec"
    rm -rf "${work:?}"/*
    if [[ $k == 5.10 ]]; then
        (cd "$work" && apt-get "${bullseye_opts[@]}" download -q "$spec" >&2) ||
            die "apt-get download $spec (bullseye) failed"
    elif ! (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$spec" >&2); then
        # Stale package lists give 404s: refresh once and retry.
        if [[ $updated -eq 0 ]]; then
            apt_update
            case "$k" in
            6.1) spec="$(image_pkg stable 6.1.)" ;;
            6.12) spec="$(image_pkg backports 6.12.)" ;;
            esac
            pkg="${spec%%=*}"
            (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$spec" >&2) ||
                die "apt-get download $spec failed"
        else
            die "apt-get download $spec failed"
        fi
    fi
    deb="$(ls "$work"/"${pkg}"_*.deb | head -n1)"
    log "$k: extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$work/root"
    vmlinuz="$(ls "$work"/root/boot/vmlinuz-* | head -n1)"
    release="${vmlinuz##*/vmlinuz-}"
    ko="$(ls "$work/root/lib/modules/$release/kernel/fs/overlayfs/"overlay.ko* 2>/dev/null | head -n1 || true)"
    [[ -n "$ko" ]] || die "$k: overlay.ko not found in $deb"

    tmp="$cache/.$k.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp "$vmlinuz" "$tmp/vmlinuz"
    unpack_ko "$ko" "$tmp/overlay.ko"
    bko="$(ls "$work/root/lib/modules/$release/kernel/fs/"binfmt_misc.ko* 2>/dev/null | head -n1 || true)"
    if [[ -n "$bko" ]]; then
        unpack_ko "$bko" "$tmp/binfmt_misc.ko"
    else
        : >"$tmp/binfmt_misc.builtin" # CONFIG_BINFMT_MISC=y (Debian builds it as a module)
    fi
    echo "$release" >"$tmp/version"
    echo "$spec" >"$tmp/package"
    case "$k" in
    # bpf is not in 5.10's default CONFIG_LSM: without it on the command line no BPF LSM program
    # can attach. The list is Debian's default (lockdown,yama,apparmor) plus integrity and bpf.
    5.10) echo "lsm=lockdown,yama,integrity,apparmor,bpf" >"$tmp/cmdline" ;;
    esac
    rm -rf "$d"
    mv "$tmp" "$d"
    log "$k: cached $release in $d ($(du -sh "$d" | cut -f1))"
done
log "done"
