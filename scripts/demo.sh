#!/usr/bin/env bash
# The main job on a fresh machine: build `zt`, generate text with the
# small model built into it (the CPU engine running a .zt model: weights
# mapped, q8_0 blocks computed in place), then write a sample tensor file
# with dense, sparse, compressed and streamed tensors, verify it deeply and
# read every tensor back.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
cargo build --release --locked --bin zt
echo "== zt generate (built-in llama-tiny q8_0 model; random weights, so the text is noise)"
./target/release/zt generate -p "hello world, the quick brown fox" -n 32 --seed 1
./target/release/zt bench-gen --ctx 256 --runs 1
echo "== zt demo (tensor file round trip)"
./target/release/zt demo "${1:-demo-out}"
