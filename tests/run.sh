#!/usr/bin/env bash
# Run every driftguard test: unit tests, the NRI protocol suite, host kernel tests (real BPF,
# overlayfs, cgroups, runc, podman), the real-containerd CRI suite (tests/cri.rs) and the VM
# suites (Debian 5.10, 6.1 and 6.12 kernels with BPF LSM in qemu). Installs what it needs first. Run
# as root on Debian 12:
#
#     sudo ./tests/run.sh
#
# Trials that cannot run here print "SKIP <name>: <reason>" and count as ignored; with
# DRIFTGUARD_REQUIRE_ALL=1 (set by CI) they fail instead.
#
# Every step runs even when an earlier one failed, and `cargo test` runs every test binary
# (--no-fail-fast): one run shows every failure. The script ends with one line per step (ok /
# FAILED, minutes) and exits 1 when any step failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failed=()
summary=()
# step NAME COMMAND...: runs COMMAND, records how it went and how long it took, never stops here.
step() {
    local name=$1
    shift
    echo "== $name" >&2
    local t0=$SECONDS rc=0
    # stderr joins stdout, as one stream in order (cargo writes progress to stderr).
    "$@" 2>&1 || rc=$?
    local took=$(((SECONDS - t0 + 30) / 60))
    if [ "$rc" -eq 0 ]; then
        summary+=("ok      ${took}m  $name")
    else
        summary+=("FAILED  ${took}m  $name (exit $rc)")
        failed+=("$name")
    fi
}

step "install dependencies (scripts/install-deps.sh)" ./scripts/install-deps.sh
step "VM kernels (tests/vm/fetch-kernels.sh)" bash tests/vm/fetch-kernels.sh
# containerd 1.7 from Debian trixie and 2.x from sid, unpacked into .cache/containerd and
# .cache/containerd-2 for tests/cri.rs (the system's apt state is not touched; see the script).
step "containerd 1.7 for tests/cri.rs" ./scripts/install-containerd.sh
step "containerd 2.x for tests/cri.rs" ./scripts/install-containerd.sh 2
# kustomize (Debian sid's; bookworm has none) for tests/packaging/test.sh, into .cache/kustomize.
step "kustomize for tests/packaging" ./scripts/install-containerd.sh kustomize

fmt() {
    if cargo fmt --version >/dev/null 2>&1; then
        cargo fmt --all -- --check
    else
        echo "SKIP fmt: rustfmt is not installed with this toolchain" >&2
    fi
}
step "cargo fmt --check (rustfmt.toml)" fmt

# The example tests (nri-plugin/tests/*_example.rs, tests/nri_example.rs) run the examples as
# programs. `cargo test --all-targets` builds examples only as test harnesses (hashed names, no
# main), so build them as programs first.
step "cargo build --workspace --examples" cargo build --workspace --examples --color never

# --no-fail-fast: a failing test binary does not hide whether the later ones pass.
step "cargo test --workspace" cargo test --workspace --all-targets --no-fail-fast --color never

# nri-plugin is meant to be published: its doctests (not run by --all-targets), its docs with
# every warning an error, and a publish dry run (packages and builds the crate as crates.io
# would; needs the crates.io index).
step "nri-plugin: doctests" cargo test --doc -p nri-plugin --color never
nri_doc() { RUSTDOCFLAGS="-D warnings" cargo doc -p nri-plugin --no-deps --features test-peer --color never; }
step "nri-plugin: cargo doc -D warnings" nri_doc
step "nri-plugin: cargo publish --dry-run" cargo publish --dry-run -p nri-plugin --allow-dirty --color never

step "packaging: build .deb/.rpm, install, purge, validate deploy/ (tests/packaging/test.sh)" \
    bash tests/packaging/test.sh

echo "== summary (minutes per step)" >&2
printf '%s\n' "${summary[@]}" >&2
if [ "${#failed[@]}" -gt 0 ]; then
    echo "tests/run.sh: ${#failed[@]} step(s) FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "tests/run.sh: every step passed" >&2
