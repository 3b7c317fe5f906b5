#!/bin/sh
# Run every driftguard benchmark (root, BPF, cgroup v2, overlayfs, cc for benches/exec-chain.c;
# qemu + tests/vm kernels for the BPF LSM numbers; containerd from scripts/install-containerd.sh for
# the cri bench). Results: stdout, $CARGO_TARGET_DIR/bench-driftguard.json and the exec charts
# $CARGO_TARGET_DIR/bench-exec.svg, bench-exec-vm.svg. See BENCHMARKS.md.
#
#   benches/run.sh                 # everything (~4-6 minutes on 2 cores after the build)
#   benches/run.sh exec nri        # some sections of benches/driftguard.rs only (no OCI hook)
#   benches/run.sh --docs [...]    # also refresh the tracked charts docs/bench-exec*.svg
#
# Sizes: DG_BENCH_ROUNDS, DG_BENCH_EXECS, DG_BENCH_VM_EXECS, DG_BENCH_VM=0, DG_BENCH_NRI_*,
# DG_BENCH_SYNC_*, DG_BENCH_EVENTS, DG_BENCH_LOAD_* (documented in benches/driftguard.rs);
# DG_BENCH_CRI_* for the cri bench (documented in benches/cri.rs).
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--docs" ]; then
    shift
    DG_BENCH_SVG_DIR="$PWD/docs"
    export DG_BENCH_SVG_DIR
fi
status=0
cargo bench --bench driftguard -- "$@" || status=$?
if [ $# -eq 0 ]; then
    echo "== oci-hook (cargo bench -p driftguard-oci-hook --bench create_runtime)"
    cargo bench -p driftguard-oci-hook --bench create_runtime || status=$?
    echo "== cri: pod start, StartContainer with 1,000 registered, re-registration after a restart; real containerd (cargo bench --bench cri)"
    cargo bench --bench cri || status=$?
fi
exit $status
