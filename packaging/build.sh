#!/usr/bin/env bash
# Build the driftguard .deb and .rpm (one package each, containing both binaries).
#
#     packaging/build.sh
#
# Installs cargo-deb and cargo-generate-rpm with `cargo install --locked` when missing, builds
# release binaries of both crates (driftguard, driftguard-oci-hook), stages what the package
# metadata in Cargo.toml expects under <target>/release/driftguard-pkg/, then writes
#     <target>/debian/driftguard_<version>-1_<arch>.deb
#     <target>/generate-rpm/driftguard-<version>-1.<arch>.rpm
# where <target> is $CARGO_TARGET_DIR, default ./target. Prints the two paths on stdout.
#
# Needs: a Rust toolchain, clang/libelf/zlib/pkg-config (scripts/install-deps.sh), dpkg-dev
# (dpkg-shlibdeps for the .deb's dependencies), binutils (strip).
#
# OCI hook descriptors come from packaging/oci/*.json. If there are none the build fails, unless
# DRIFTGUARD_PKG_PLACEHOLDER_HOOKS=1, which packages an inert placeholder descriptor instead
# (for testing the packaging before the hook exists; never release such a package).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "packaging/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export CARGO_TARGET_DIR=$target

# 1. Packaging tools.
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install --locked cargo-deb
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
    log "installing cargo-generate-rpm"
    cargo install --locked cargo-generate-rpm
fi
command -v dpkg-shlibdeps >/dev/null || log "warning: dpkg-shlibdeps missing (apt-get install dpkg-dev): the .deb will have no library dependencies"

# 2. Release binaries of both crates.
log "cargo build --release (driftguard, driftguard-oci-hook) into $target"
# The JSON messages name driftguard's build-script OUT_DIR, where build.rs generated the man pages
# and shell completions from the CLI definition (src/args.rs).
build_json=$(mktemp)
trap 'rm -f "$build_json"' EXIT
cargo build --release -p driftguard -p driftguard-oci-hook --bins --message-format=json-render-diagnostics >"$build_json"
out_dir=$(python3 - "$build_json" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    d = m.get("out_dir") or ""
    if m.get("reason") == "build-script-executed" and os.path.isdir(os.path.join(d, "man")):
        print(d)
        break
PY
)
[[ -n $out_dir && -d $out_dir/man && -d $out_dir/completions ]] \
    || die "no generated man pages/completions in driftguard's build-script OUT_DIR ('$out_dir')"
rel=$target/release
for b in driftguard driftguard-oci-hook; do
    [[ -x $rel/$b ]] || die "$rel/$b was not built"
done

# 3. Stage: stripped binaries for the rpm (cargo-deb strips its own copy), OCI hook descriptors.
stage=$rel/driftguard-pkg
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/hooks.d" "$stage/man" "$stage/completions"
cp "$out_dir"/man/*.1 "$stage/man/"
cp "$out_dir"/completions/driftguard.bash "$out_dir"/completions/_driftguard "$out_dir"/completions/driftguard.fish \
    "$stage/completions/"
for b in driftguard driftguard-oci-hook; do
    cp "$rel/$b" "$stage/bin/$b"
    strip --strip-unneeded "$stage/bin/$b" 2>/dev/null || log "warning: could not strip $b"
done
shopt -s nullglob
hooks=(packaging/oci/*.json)
shopt -u nullglob
if [[ ${#hooks[@]} -gt 0 ]]; then
    for h in "${hooks[@]}"; do
        python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$h" 2>/dev/null \
            || die "$h is not valid JSON"
        cp "$h" "$stage/hooks.d/"
    done
    log "OCI hook descriptors: ${hooks[*]}"
elif [[ ${DRIFTGUARD_PKG_PLACEHOLDER_HOOKS:-0} == 1 ]]; then
    log "WARNING: packaging/oci/*.json missing: packaging an inert PLACEHOLDER hook descriptor"
    # "always": false never matches: podman/CRI-O load it and never run the hook.
    cat >"$stage/hooks.d/driftguard-placeholder.json" <<'JSON'
{
  "version": "1.0.0",
  "hook": { "path": "/usr/bin/driftguard-oci-hook", "args": ["driftguard-oci-hook", "placeholder"] },
  "when": { "always": false },
  "stages": ["createRuntime"]
}
JSON
else
    die "no OCI hook descriptors in packaging/oci/*.json (set DRIFTGUARD_PKG_PLACEHOLDER_HOOKS=1 to package a placeholder for testing)"
fi

# 4. Packages. Both read their metadata from the root Cargo.toml.
rm -f "$target"/debian/driftguard_*.deb "$target"/generate-rpm/driftguard-*.rpm
log "cargo deb"
cargo deb -p driftguard --no-build >&2
log "cargo generate-rpm"
cargo generate-rpm -p . --target-dir "$target" >&2

shopt -s nullglob
debs=("$target"/debian/driftguard_*.deb)
rpms=("$target"/generate-rpm/driftguard-*.rpm)
[[ ${#debs[@]} -eq 1 ]] || die "expected one .deb in $target/debian, found ${#debs[@]}"
[[ ${#rpms[@]} -eq 1 ]] || die "expected one .rpm in $target/generate-rpm, found ${#rpms[@]}"
printf '%s\n' "${debs[0]}" "${rpms[0]}"
