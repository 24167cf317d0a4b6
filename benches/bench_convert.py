"""GGUF -> .zt conversion speed and peak memory: ours (CLI and Python API)
against upstream `ztensor.convert` (2.1.2), on the same file, in one run.

Builds a synthetic GGUF (default 560 MB: f16 and q8_0 tensors, llama.cpp
layout) with the `gguf` package, warms the page cache, then runs each
converter in its own process, alternating, and reports wall time, input
GB/s and the child's peak RSS (from wait4). Raw output (no compression),
xxh3 digests on both sides.

    python benches/bench_convert.py --upstream-python .venv-interop/bin/python
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_gguf(path: Path, mib: int) -> None:
    """A llama-shaped GGUF of about `mib` MiB: f16 and q8_0 weights."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(2048)
    w.add_block_count(1)
    rng = np.random.default_rng(0)
    row = 2048
    q8_row_bytes = row // 32 * 34
    per_tensor = 32 << 20
    n = max(2, (mib << 20) // per_tensor)
    for i in range(n):
        if i % 2 == 0:
            data = rng.integers(0, 1 << 16, size=(per_tensor // 2 // row, row), dtype=np.uint16)
            w.add_tensor(f"blk.{i}.f16", data.view(np.float16))
        else:
            rows = per_tensor // q8_row_bytes
            blocks = rng.integers(0, 256, size=(rows, q8_row_bytes), dtype=np.uint8)
            # Valid f16 scales so every block is a finite Q8_0 block.
            b = blocks.reshape(rows, row // 32, 34)
            b[:, :, 0:2] = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
            w.add_tensor(
                f"blk.{i}.q8_0",
                blocks,
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process. A child's peak
    starts at this process's RSS when forked, so this process stays small:
    the input is built in a subprocess and numpy is never imported here."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed with status {status}")
    return secs, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=560)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--zt", default=str(REPO / "target" / "release" / "zt"))
    ap.add_argument("--upstream-python", help="a Python with ztensor==2.1.2 installed")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build_gguf(Path(args.build), args.mib)
        return 0

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        src = Path(d) / "model.gguf"
        subprocess.run(
            [sys.executable, __file__, "--build", str(src), "--mib", str(args.mib)], check=True
        )
        size = src.stat().st_size
        with open(src, "rb") as f:  # warm the page cache, 8 MiB at a time
            while f.read(8 << 20):
                pass
        baseline = run(["true"])[1]
        out = str(Path(d) / "out.zt")
        py_ours = "import sys, ztensor; ztensor.convert(sys.argv[1], sys.argv[2], checksum='xxh3')"
        py_up = "import sys, ztensor; ztensor.convert(sys.argv[1], sys.argv[2])"
        runners = {
            "ours (zt convert)": [args.zt, "convert", "-q", str(src), out],
            "ours (ztensor.convert)": [sys.executable, "-c", py_ours, str(src), out],
        }
        if args.upstream_python:
            runners["upstream 2.1.2 (ztensor.convert)"] = [
                args.upstream_python,
                "-c",
                py_up,
                str(src),
                out,
            ]
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in runners}
        for _ in range(args.runs):
            for name, cmd in runners.items():
                results[name].append(run(cmd))
                os.remove(out)
        print(f"input: {size / 1e6:.0f} MB GGUF (f16 + q8_0), page cache warm, raw output")
        print(f"(peak RSS includes ~{baseline:.0f} MB inherited from this launcher at fork)")
        print(f"{'converter':34} {'median s':>9} {'best s':>8} {'GB/s':>6} {'peak RSS MB':>12}")
        medians = {}
        for name, rs in results.items():
            secs = [s for s, _ in rs]
            med = statistics.median(secs)
            medians[name] = med
            rss = max(r for _, r in rs)
            print(f"{name:34} {med:9.2f} {min(secs):8.2f} {size / med / 1e9:6.2f} {rss:12.1f}")
        up = medians.get("upstream 2.1.2 (ztensor.convert)")
        if up:
            for name, med in medians.items():
                if name.startswith("ours"):
                    print(f"speed-up of {name} over upstream: {up / med:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
