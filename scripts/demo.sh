#!/usr/bin/env bash
# The main job on a fresh machine: build `zt`, write a sample file with
# dense, sparse, compressed and streamed tensors, list it, verify it deeply
# and read every tensor back.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
cargo build --release --locked --bin zt
./target/release/zt demo "${1:-demo-out}"
