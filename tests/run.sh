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
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh
bash tests/vm/fetch-kernels.sh
# containerd 1.7 from Debian trixie and 2.x from sid, unpacked into .cache/containerd and
# .cache/containerd-2 for tests/cri.rs (the system's apt state is not touched; see the script).
./scripts/install-containerd.sh
./scripts/install-containerd.sh 2
# kustomize (Debian sid's; bookworm has none) for tests/packaging/test.sh, into .cache/kustomize.
./scripts/install-containerd.sh kustomize

echo "== cargo fmt --check (rustfmt.toml)" >&2
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
else
    echo "SKIP fmt: rustfmt is not installed with this toolchain" >&2
fi

# The example tests (nri-plugin/tests/*_example.rs, tests/nri_example.rs) run the examples as
# programs. `cargo test --all-targets` builds examples only as test harnesses (hashed names, no
# main), so build them as programs first.
echo "== cargo build --workspace --examples" >&2
cargo build --workspace --examples --color never 2>&1

echo "== cargo test --workspace" >&2
cargo test --workspace --all-targets --color never 2>&1

# nri-plugin is meant to be published: its doctests (not run by --all-targets), its docs with
# every warning an error, and a publish dry run (packages and builds the crate as crates.io
# would; needs the crates.io index).
echo "== nri-plugin: doctests, cargo doc -D warnings, cargo publish --dry-run" >&2
cargo test --doc -p nri-plugin --color never 2>&1
RUSTDOCFLAGS="-D warnings" cargo doc -p nri-plugin --no-deps --features test-peer --color never 2>&1
cargo publish --dry-run -p nri-plugin --allow-dirty --color never 2>&1

echo "== packaging: build .deb/.rpm, install, purge, validate deploy/ (tests/packaging/test.sh)" >&2
bash tests/packaging/test.sh
