#!/usr/bin/env bash
# Build driftguard and run the agent on this machine (Debian 12, as root; prefix sudo otherwise):
#
#     ./scripts/quickstart.sh
#
# Installs only what building and running the agent needs (scripts/install-deps.sh --agent; a
# Rust toolchain >= 1.82 must be installed), builds release binaries, prints what to try next, then runs
# `driftguard run` in the foreground (Ctrl-C stops the agent; enforcement stays pinned until
# `driftguard unload`). Without containerd the agent still enforces pinned state and OCI-hook
# policies and keeps retrying the NRI socket.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/install-deps.sh --agent
cargo build --release --workspace
bin="$PWD/target/release"
"$bin/driftguard" check || true
cat >&2 <<MSG

driftguard is built: $bin/driftguard and $bin/driftguard-oci-hook
Starting the agent now. In another terminal, see it stop a dropped binary in a throwaway
runc container (no cluster needed):

    $bin/driftguard demo

and look at what is under policy with:  $bin/driftguard status
(prefix sudo when not root). Ctrl-C stops the agent; enforcement stays pinned until

    $bin/driftguard unload

which also removes the agent's state, so that the test command can install the packages.

MSG
exec "$bin/driftguard" run "$@"
