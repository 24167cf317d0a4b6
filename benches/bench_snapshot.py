"""Restoring a context from a snapshot against re-prefilling it, on the
same model and engine, in one run; and snapshot sizes against the raw KV
bytes, with and without zstd.

    python benches/bench_snapshot.py --model MODEL.zt [--tokens 1024] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ztensor.engine import Engine


def best(f: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.tokens
    e = Engine(args.model, n_ctx=n + 16, n_threads=args.threads, kv_dtype="f16")
    v = e.n_vocab
    prompt = [1] + [(i * 7919 + 13) % v for i in range(1, n)]

    def prefill() -> None:
        e.reset()
        e.eval(prompt, all_logits=False)

    t_prefill = best(prefill, args.runs)
    info = e.info
    kv_bytes = 2 * info["n_layer"] * n * (info["n_embd"] // info["n_head"]) * info["n_head_kv"] * 2
    with tempfile.TemporaryDirectory() as d:
        raw, packed = Path(d) / "raw.zt", Path(d) / "zstd.zt"
        t_dump = best(lambda: e.snapshot(raw), args.runs)
        t_dump_z = best(lambda: e.snapshot(packed, compress=True), args.runs)
        blob = raw.read_bytes()
        fresh = Engine(args.model, n_ctx=n + 16, n_threads=args.threads, kv_dtype="f16")
        t_restore = best(lambda: fresh.restore(raw), args.runs)
        t_restore_z = best(lambda: fresh.restore(packed), args.runs)
        t_loads = best(lambda: fresh.restore_bytes(blob), args.runs)
        assert fresh.tokens == e.tokens
        print(f"model {args.model}: {n}-token context, {args.threads} threads, best of {args.runs}")
        print(f"re-prefill            {t_prefill * 1e3:9.1f} ms")
        print(
            f"restore (file, raw)   {t_restore * 1e3:9.1f} ms   {t_prefill / t_restore:7.1f}x faster"
        )
        print(
            f"restore (file, zstd)  {t_restore_z * 1e3:9.1f} ms   {t_prefill / t_restore_z:7.1f}x faster"
        )
        print(f"restore (bytes, raw)  {t_loads * 1e3:9.1f} ms   {t_prefill / t_loads:7.1f}x faster")
        print(f"snapshot write raw    {t_dump * 1e3:9.1f} ms, zstd {t_dump_z * 1e3:.1f} ms")
        rs, zs = os.path.getsize(raw), os.path.getsize(packed)
        print(f"raw KV bytes          {kv_bytes / 1e6:9.2f} MB")
        print(f"snapshot raw          {rs / 1e6:9.2f} MB   {rs / kv_bytes:5.3f} of the KV bytes")
        print(f"snapshot zstd         {zs / 1e6:9.2f} MB   {zs / kv_bytes:5.3f} of the KV bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
