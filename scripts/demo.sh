#!/usr/bin/env bash
# The README's main job: a self-contained local cluster demo on loopback. Builds the
# example programs, then runs `cluster-demo`, which starts the servers it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p examples --bins
exec target/release/cluster-demo "$@"
