#!/usr/bin/env bash
# Fetch Debian's containerd for the real-runtime CRI tests (tests/cri.rs), as root, WITHOUT
# touching the system's apt state: a private apt configuration (its own sources list, lists and
# cache directories) downloads the one .deb, which is unpacked with `dpkg -x` into a cache
# directory. Nothing from trixie or sid is installed on the system; both packages only need runc
# (bookworm's 1.1.5 is fine) and libc >= 2.34 (bookworm has 2.36).
#
#     sudo ./scripts/install-containerd.sh        # containerd 1.7 from trixie (NRI 0.6)
#     sudo ./scripts/install-containerd.sh 2      # containerd 2.x from sid (2.1.9 in 2026-12)
#     sudo ./scripts/install-containerd.sh kustomize   # kustomize 5.x from sid (Go, static but
#                                                 # for libc): renders deploy/kustomize in
#                                                 # tests/packaging/test.sh; bookworm has none
#
# Idempotent; prints the directory at the end. Result: <dir>/root/usr/bin/{containerd,ctr,
# containerd-shim-runc-v2} plus `version` (the package version), where <dir> is
# ${DRIFTGUARD_CONTAINERD_DIR:-<repo>/.cache/containerd} for 1.7 and
# ${DRIFTGUARD_CONTAINERD2_DIR:-<repo>/.cache/containerd-2} for 2.x (kustomize: <dir>/root/usr/bin/
# kustomize, <dir> = ${DRIFTGUARD_KUSTOMIZE_DIR:-<repo>/.cache/kustomize}); tests/cri.rs reads the same
# variables. A complete directory is not fetched again; DRIFTGUARD_CONTAINERD_REFRESH=1
# re-resolves and refetches if the suite has a newer package. DRIFTGUARD_CONTAINERD_SUITE
# overrides the suite (trixie / sid).
set -euo pipefail

log() { echo "install-containerd: $*" >&2; }
die() { log "$*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
line=${1:-1.7}
case $line in
1.7)
    dir=${DRIFTGUARD_CONTAINERD_DIR:-$repo/.cache/containerd}
    suite=${DRIFTGUARD_CONTAINERD_SUITE:-trixie}
    ;;
2)
    dir=${DRIFTGUARD_CONTAINERD2_DIR:-$repo/.cache/containerd-2}
    suite=${DRIFTGUARD_CONTAINERD_SUITE:-sid}
    ;;
kustomize)
    dir=${DRIFTGUARD_KUSTOMIZE_DIR:-$repo/.cache/kustomize}
    suite=${DRIFTGUARD_KUSTOMIZE_SUITE:-sid}
    ;;
*) die "usage: $0 [1.7|2|kustomize]" ;;
esac
pkg=containerd
bins=(containerd ctr containerd-shim-runc-v2)
run_check=(--version)
if [[ $line == kustomize ]]; then
    pkg=kustomize
    bins=(kustomize)
    run_check=(version)
fi
have_all() {
    local b
    for b in "${bins[@]}"; do [[ -x $1/usr/bin/$b ]] || return 1; done
}

if have_all "$dir/root" && [[ -s $dir/version && ${DRIFTGUARD_CONTAINERD_REFRESH:-0} != 1 ]]; then
    log "have $pkg $(cat "$dir/version") in $dir"
    exit 0
fi

command -v dpkg >/dev/null || die "dpkg not found (this script is for Debian)"

# The Debian mirror the system already uses for its main (bookworm) suite, from one-line
# sources.list files and deb822 .sources files alike. Security and third-party sources are
# skipped: trixie lives on the main archive.
find_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        # deb [options] URI suite components...
        awk '$1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                uri = $i; s = $(i + 1)
                if (s ~ /^(bookworm|stable|trixie)$/) print uri
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        # Paragraphs separated by blank lines; Types/URIs/Suites/Enabled fields.
        awk 'function flush() {
                 if (types ~ /(^| )deb( |$)/ && enabled != "no" && suites ~ /(^| )(bookworm|stable|trixie)( |$)/) {
                     n = split(uris, u, " "); for (k = 1; k <= n; k++) print u[k]
                 }
                 types = uris = suites = ""; enabled = "yes"
             }
             BEGIN { enabled = "yes" }
             /^[[:space:]]*$/ { flush(); next }
             /^#/ { next }
             tolower($1) == "types:"   { $1 = ""; types = $0 }
             tolower($1) == "uris:"    { $1 = ""; uris = $0 }
             tolower($1) == "suites:"  { $1 = ""; suites = $0 }
             tolower($1) == "enabled:" { enabled = tolower($2) }
             END { flush() }' "$f"
    done
}
mirror=${DRIFTGUARD_DEBIAN_MIRROR:-$(find_mirror | grep -v -- '-security' | head -n1 || true)}
[[ -n $mirror ]] || die "no Debian mirror found in /etc/apt/sources.list{,.d} (set DRIFTGUARD_DEBIAN_MIRROR)"
mirror=${mirror%/}

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || die "$keyring missing (apt-get install debian-archive-keyring)"

apt_dir=$dir/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/dl"
echo "deb [signed-by=$keyring] $mirror $suite main" >"$apt_dir/sources.list"
apt_opts=(
    -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Languages=none"
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Sandbox::User=root"
)

log "apt-get update ($suite from $mirror, private lists in $apt_dir)"
apt-get "${apt_opts[@]}" update -qq >/dev/null || die "apt-get update of $suite failed"
version=$(apt-cache "${apt_opts[@]}" policy "$pkg" | awk '/Candidate:/ { print $2 }')
[[ -n $version && $version != "(none)" ]] || die "no $pkg in $suite at $mirror"
case $line:$version in
kustomize:*) ;;
1.7:1.7.*) ;;
2:2.*) ;;
1.7:*) log "warning: $suite has containerd $version; the 1.7 trials were written against 1.7.24" ;;
*) die "$suite has containerd $version, not 2.x (set DRIFTGUARD_CONTAINERD_SUITE to a suite with 2.x)" ;;
esac
if have_all "$dir/root" && [[ "$(cat "$dir/version" 2>/dev/null)" == "$version" ]]; then
    log "$pkg $version already in $dir"
    rm -rf "$apt_dir"
    exit 0
fi

log "apt-get download $pkg=$version"
rm -f "$apt_dir/dl"/*.deb
(cd "$apt_dir/dl" && apt-get "${apt_opts[@]}" download -qq "$pkg=$version") || die "download failed"
deb=$(ls "$apt_dir/dl"/"$pkg"_*.deb)
rm -rf "$dir/root.new"
dpkg -x "$deb" "$dir/root.new"
for b in "${bins[@]}"; do
    [[ -x $dir/root.new/usr/bin/$b ]] || die "$deb lacks usr/bin/$b"
done
# Only runc and libc come from the system: fail here, not in the tests, if the package outgrew them.
log "$deb depends on: $(dpkg-deb -f "$deb" Depends)"
"$dir/root.new/usr/bin/${bins[0]}" "${run_check[@]}" >/dev/null ||
    die "$deb's ${bins[0]} does not run on this system (Depends: $(dpkg-deb -f "$deb" Depends))"
rm -rf "$dir/root"
mv "$dir/root.new" "$dir/root"
echo "$version" >"$dir/version"
# The package lists are only needed again for a refresh, which fetches them anew.
rm -rf "$apt_dir"
log "$pkg $version in $dir/root/usr/bin ($("$dir/root/usr/bin/${bins[0]}" "${run_check[@]}" 2>/dev/null || true))"
