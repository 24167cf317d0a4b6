"""Engine speed against llama.cpp (through llama-cpp-python) on the same
GGUF files, in one run: prefill and decode tokens/s at the same thread
count, f16 KV cache on both sides, flash attention off, and each runner's
peak RSS (from wait4, with the file size beside it).

The models are the ~134M-parameter `llama-100m` files built by
`../shared/tools/make_models` (specs/bench.json: f16, q8_0, q4_0, q4_k_m,
q6_k). Ours runs the `.zt` converted from each GGUF.

    python benches/bench_engine.py --models DIR --llama-python VENV/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TYPES = ["f16", "q8_0", "q4_0", "q4_k_m", "q6_k"]

# Each runner prints one JSON line: prefill and decode tokens/s (best of runs).
OURS = r"""
import json, sys, time
from ztensor.engine import Engine
path, threads, n_prompt, n_gen, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
e = Engine(path, n_ctx=n_prompt + n_gen + 8, n_threads=threads, kv_dtype="f16")
v = e.n_vocab
prompt = [1] + [(i * 7919 + 13) % v for i in range(1, n_prompt)]
pre, dec = [], []
for _ in range(runs):
    e.reset()
    t = time.perf_counter(); e.eval(prompt, all_logits=False); pre.append(n_prompt / (time.perf_counter() - t))
    tok = 1
    t = time.perf_counter()
    for i in range(n_gen):
        tok = int(e.eval([tok])[0].argmax())
    dec.append(n_gen / (time.perf_counter() - t))
print(json.dumps({"prefill": max(pre), "decode": max(dec)}))
"""

LLAMA = r"""
import json, sys, time
import numpy as np
from llama_cpp import Llama
path, threads, n_prompt, n_gen, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_threads=threads, n_threads_batch=threads,
            n_batch=512, n_ubatch=512, flash_attn=False, verbose=False, logits_all=False)
v = llm.n_vocab()
prompt = [1] + [(i * 7919 + 13) % v for i in range(1, n_prompt)]
pre, dec = [], []
for _ in range(runs):
    llm.reset()
    t = time.perf_counter(); llm.eval(prompt); pre.append(n_prompt / (time.perf_counter() - t))
    tok = 1
    t = time.perf_counter()
    for i in range(n_gen):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    dec.append(n_gen / (time.perf_counter() - t))
print(json.dumps({"prefill": max(pre), "decode": max(dec)}))
"""


def run(cmd: list[str]) -> tuple[dict[str, float], float]:
    """The runner's JSON result and its peak RSS in MB."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"{cmd[:3]} failed with status {status}")
        out.seek(0)
        return json.loads(out.read().decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="directory with llama-100m-<type>.gguf")
    ap.add_argument("--llama-python", help="a Python with llama-cpp-python installed")
    ap.add_argument("--zt", default=str(Path(__file__).resolve().parents[1] / "target/release/zt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--types", default=",".join(TYPES))
    args = ap.parse_args()
    common = [str(args.threads), str(args.prompt_tokens), str(args.gen_tokens), str(args.runs)]
    print(
        f"{args.threads} threads, prompt {args.prompt_tokens} tokens, decode {args.gen_tokens}"
        f" tokens, best of {args.runs}; f16 KV; flash attention off"
    )
    head = f"{'type':8} {'file MB':>8} | {'prefill t/s ours':>16} {'llama.cpp':>10} {'ratio':>6}"
    head += f" | {'decode t/s ours':>15} {'llama.cpp':>10} {'ratio':>6} | {'RSS MB ours':>11} {'llama':>6}"
    print(head)
    with tempfile.TemporaryDirectory() as d:
        for t in args.types.split(","):
            gguf = Path(args.models) / f"llama-100m-{t}.gguf"
            zt = Path(d) / f"{t}.zt"
            subprocess.run([args.zt, "convert", "-q", str(gguf), str(zt)], check=True)
            ours, ours_rss = run([sys.executable, "-c", OURS, str(zt), *common])
            line = f"{t:8} {gguf.stat().st_size / 1e6:8.1f} | {ours['prefill']:16.1f}"
            if args.llama_python:
                ref, ref_rss = run([args.llama_python, "-c", LLAMA, str(gguf), *common])
                line += f" {ref['prefill']:10.1f} {ours['prefill'] / ref['prefill']:6.2f}"
                line += f" | {ours['decode']:15.1f} {ref['decode']:10.1f} {ours['decode'] / ref['decode']:6.2f}"
                line += f" | {ours_rss:11.0f} {ref_rss:6.0f}"
            else:
                line += f" | {ours['decode']:15.1f} | {ours_rss:11.0f}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
