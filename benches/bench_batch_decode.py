"""Batched decode, engine level: aggregate tokens/s of N sequences decoding
together, `zt bench-gen --batch` against llama.cpp's own batched decode
(`llama_decode` on a batch holding one token of each of N sequences, what
llama-server's slots run each step), in one run, side by side.

Same model, threads, f16 KV cache, no flash attention, greedy, prompt of
`--prompt-tokens` ids per sequence (prefill not timed), `--steps` decode
steps. Run with the llama-cpp-python environment's interpreter (it has
`llama_cpp`; AMX off) and a built `zt`:

    cargo build --profile ci --bin zt
    /work/venv-llama/venv/bin/python benches/bench_batch_decode.py \\
        --model M.gguf [--batch 1,2,4,8] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import subprocess
import time
from pathlib import Path

import llama_cpp as ll
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def llama_batched(model: Path, n: int, threads: int, prompt_tokens: int, steps: int) -> float:
    """llama.cpp: N sequences prefilled, then `steps` batched decode steps.

    Args:
        model: The GGUF file.
        n: Sequences.
        threads: Threads.
        prompt_tokens: Prompt length per sequence.
        steps: Decode steps.

    Returns:
        Aggregate decode tokens/s.
    """
    mp = ll.llama_model_default_params()
    m = ll.llama_model_load_from_file(str(model).encode(), mp)
    vocab = ll.llama_model_get_vocab(m)
    n_vocab = ll.llama_vocab_n_tokens(vocab)
    cp = ll.llama_context_default_params()
    per_seq = prompt_tokens + steps + 8
    cp.n_ctx = per_seq * n
    cp.n_batch = max(512, prompt_tokens)
    cp.n_ubatch = max(512, prompt_tokens)
    cp.n_seq_max = n
    cp.n_threads = threads
    cp.n_threads_batch = threads
    cp.flash_attn_type = 0  # disabled
    cp.kv_unified = False
    ctx = ll.llama_init_from_model(m, cp)
    batch = ll.llama_batch_init(max(prompt_tokens, n), 0, 1)

    def fill(entries: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

    def argmax(i: int) -> int:
        p = ll.llama_get_logits_ith(ctx, i)
        arr = np.ctypeslib.as_array(ctypes.cast(p, ctypes.POINTER(ctypes.c_float)), (n_vocab,))
        return int(arr.argmax())

    nxt = []
    for s in range(n):
        ids = [1] + [((i + s) * 7919 + 13) % n_vocab for i in range(1, prompt_tokens)]
        fill([(t, p, s, p == len(ids) - 1) for p, t in enumerate(ids)])
        if ll.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed (prefill)")
        nxt.append(argmax(len(ids) - 1))
    t0 = time.perf_counter()
    for step in range(steps):
        fill([(nxt[s], prompt_tokens + step, s, True) for s in range(n)])
        if ll.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed (decode)")
        nxt = [argmax(s) for s in range(n)]
    rate = n * steps / (time.perf_counter() - t0)
    ll.llama_batch_free(batch)
    ll.llama_free(ctx)
    ll.llama_model_free(m)
    return rate


def zt_batched(binary: Path, model: Path, batches: list[int], a: argparse.Namespace) -> dict:
    """zt: `bench-gen --batch` (one run per N, median of `--runs`).

    Args:
        binary: The zt binary.
        model: The GGUF file.
        batches: Sequence counts.
        a: The command line.

    Returns:
        {N: aggregate decode tokens/s}.
    """
    cmd = [str(binary), "bench-gen", str(model), "--threads", str(a.threads)]
    cmd += ["--kv", "f16", "--ctx", str(a.prompt_tokens + a.steps + 8)]
    cmd += ["--prompt-tokens", str(a.prompt_tokens), "--gen-tokens", str(a.steps)]
    cmd += ["--runs", str(a.runs), "--batch", ",".join(str(b) for b in batches)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rates = {}
    m1 = re.search(r"decode:\s+([\d.]+) tokens/s", out)
    if m1:
        rates[1] = float(m1.group(1))
    for m in re.finditer(r"batched decode of (\d+) sequences: ([\d.]+)", out):
        rates[int(m.group(1))] = float(m.group(2))
    return rates


def main() -> None:
    """Runs both sides and prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--binary", type=Path, default=REPO / "target" / "ci" / "zt")
    ap.add_argument("--batch", default="1,2,4,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    batches = [int(x) for x in a.batch.split(",")]
    ll.llama_backend_init()
    print(f"load before: {os.getloadavg()}", flush=True)
    zt = zt_batched(a.binary, a.model, batches, a)
    peer = {n: llama_batched(a.model, n, a.threads, a.prompt_tokens, a.steps) for n in batches}
    print(
        f"model {a.model.name}, {a.threads} threads, f16 KV, greedy, "
        f"{a.prompt_tokens}-token prompts, {a.steps} steps"
    )
    print(f"{'N':>3} {'zt tok/s':>9} {'llama.cpp tok/s':>16} {'zt/llama':>9}")
    for n in batches:
        z, p = zt.get(n, float("nan")), peer[n]
        print(f"{n:>3} {z:>9.1f} {p:>16.1f} {z / p:>9.2f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
