"""Constrained decoding speed: tok/s without a grammar and under llama.cpp's
JSON grammar (`tests/data/grammars/json.gbnf`), ours (Python API) and
llama.cpp's (llama-cpp-python, `LlamaGrammar.from_string`) on SmolLM2-135M
(49,152-token vocabulary), in one run, side by side with the ratios.

Decode speed only: each run streams `--tokens` tokens; the time from the
first token to the last over the tokens after the first (prefill and the
first token, which builds the grammar's per-vocabulary structures, are
left out). One warm-up run per setting, then the median of `--repeat`.
llama.cpp's runs get `--llama-timeout` seconds in all (its grammar runs
over the full vocabulary can be very slow); settings it did not finish show
n/a.
Sampler settings: greedy, the default (top-k 40, top-p 0.95, min-p 0.05)
and pure temperature 1.0 (no top-k/top-p/min-p). Not run in CI.

    python benches/bench_grammar.py --llama-python /work/venv-llama/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ZT_MODEL_CACHE", Path.home() / ".cache" / "ztensor-models"))
MODEL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
GRAMMAR = REPO / "tests" / "data" / "grammars" / "json.gbnf"
PROMPT = "Here is a JSON object describing a city, its population and landmarks:\n"

SETTINGS: dict[str, dict[str, float]] = {
    "greedy": {"temperature": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
    "default": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
    "temp1.0": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
}

LLAMA = r"""
import json, sys, time, statistics
from llama_cpp import Llama, LlamaGrammar
args = json.loads(sys.argv[1])
llm = Llama(model_path=args["model"], n_ctx=args["n_ctx"], n_threads=args["threads"],
            n_threads_batch=args["threads"], verbose=False, seed=0)
grammar = LlamaGrammar.from_string(args["grammar"], verbose=False)
for name, s in args["settings"].items():
    for mode in ("free", "json"):
        rates = []
        for rep in range(args["repeat"] + 1):
            llm.reset()
            times = []
            for chunk in llm.create_completion(
                args["prompt"], max_tokens=args["tokens"], stream=True, seed=rep,
                temperature=s["temperature"], top_k=s["top_k"], top_p=s["top_p"],
                min_p=s["min_p"], repeat_penalty=1.0,
                grammar=grammar if mode == "json" else None,
            ):
                times.append(time.perf_counter())
            if rep and len(times) > 2:
                rates.append((len(times) - 1) / (times[-1] - times[0]))
        rate = statistics.median(rates) if rates else None
        print(json.dumps({f"{name}/{mode}": rate}), flush=True)
"""


def ours(args: argparse.Namespace, grammar: str) -> dict[str, float | None]:
    """Median decode tok/s of our engine per setting and mode."""
    from ztensor.engine import Engine

    e = Engine(MODEL, n_ctx=args.tokens + 128, n_threads=args.threads)
    out: dict[str, float | None] = {}
    for name, s in SETTINGS.items():
        for mode in ("free", "json"):
            rates = []
            for rep in range(args.repeat + 1):
                e.reset()
                times = []
                kwargs: dict[str, Any] = dict(s)
                if mode == "json":
                    kwargs["grammar"] = grammar
                with e.stream(
                    PROMPT, max_tokens=args.tokens, seed=rep, repeat_penalty=1.0, **kwargs
                ) as run:
                    for _ in run:
                        times.append(time.perf_counter())
                if rep and len(times) > 2:
                    rates.append((len(times) - 1) / (times[-1] - times[0]))
            out[f"{name}/{mode}"] = statistics.median(rates) if rates else None
    return out


def llama(args: argparse.Namespace, grammar: str) -> dict[str, float | None]:
    """The same measurement through llama-cpp-python in its own process."""
    payload = {
        "model": str(MODEL),
        "n_ctx": args.tokens + 128,
        "threads": args.threads,
        "grammar": grammar,
        "settings": SETTINGS,
        "prompt": PROMPT,
        "tokens": args.tokens,
        "repeat": args.repeat,
    }
    cmd = [args.llama_python, "-c", LLAMA, json.dumps(payload)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.llama_timeout)
        stdout, stderr, failed = res.stdout, res.stderr, res.returncode != 0
    except subprocess.TimeoutExpired as e:
        # Keep the settings that finished (one JSON line each).
        raw = e.stdout or b""
        stdout = raw.decode() if isinstance(raw, bytes) else raw
        stderr, failed = f"timed out after {args.llama_timeout} s", True
    if failed:
        print(f"llama-cpp-python: {stderr[-2000:]}", file=sys.stderr)
    result: dict[str, float | None] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    return result


def fmt(x: float | None) -> str:
    """A rate or n/a."""
    return "n/a" if x is None else f"{x:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    """a / b or n/a."""
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def main() -> None:
    """Runs both engines and prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=128, help="tokens per run")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-python", help="a Python with llama-cpp-python installed")
    ap.add_argument(
        "--llama-timeout", type=float, default=900, help="seconds for all llama.cpp runs"
    )
    args = ap.parse_args()
    if not MODEL.exists():
        sys.exit(f"{MODEL} absent: scripts/fetch_models.py")
    grammar = GRAMMAR.read_text()
    mine = ours(args, grammar)
    print("ours:", json.dumps({k: None if v is None else round(v, 1) for k, v in mine.items()}))
    ref = llama(args, grammar) if args.llama_python else {}
    print(f"SmolLM2-135M Q4_1, JSON grammar, {args.tokens} tokens, {args.threads} threads")
    head = f"{'sampler':8} | {'ours free':>9} {'ours json':>9} {'json/free':>9}"
    head += f" | {'llama free':>10} {'llama json':>10} {'json/free':>9} | {'ours/llama json':>15}"
    print(head)
    print("-" * len(head))
    for name in SETTINGS:
        of, oj = mine.get(f"{name}/free"), mine.get(f"{name}/json")
        lf, lj = ref.get(f"{name}/free"), ref.get(f"{name}/json")
        row = f"{name:8} | {fmt(of):>9} {fmt(oj):>9} {ratio(oj, of):>9}"
        row += f" | {fmt(lf):>10} {fmt(lj):>10} {ratio(lj, lf):>9} | {ratio(oj, lj):>15}"
        print(row)


if __name__ == "__main__":
    main()
