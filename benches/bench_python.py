"""I/O benchmark of the Python package against safetensors 0.8 and upstream
ztensor 2.1.2 on the same data, in one run. Prints medians and ratios.

    python benches/bench_python.py --upstream .venv-interop/bin/python [--mib 256] [--runs 5]

Upstream ztensor shares our package name, so its timings run in a child
process of its own virtual environment, on the same files and data.
A benchmark, not a test: nothing fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

UPSTREAM_CHILD = r"""
import json, os, statistics, sys, time
import numpy as np
import ztensor
from ztensor import numpy as ztnp

def median(fn, runs, setup=None):
    xs = []
    for _ in range(runs):
        if setup:
            setup(); os.sync()
        t = time.perf_counter(); fn(); xs.append(time.perf_counter() - t)
    return statistics.median(xs)

d, mib, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
big = np.load(os.path.join(d, "big.npy"), mmap_mode="r")
big = np.array(big)
small = np.load(os.path.join(d, "small.npy"))
out = {}
p = os.path.join(d, "up.zt")
def rm():
    if os.path.exists(p): os.remove(p)
out["save_raw"] = median(lambda: ztnp.save_file({"t": big}, p), runs, rm)
out["load_zero_copy"] = median(lambda: ztnp.load_file(p, copy=False)["t"].shape, runs)
out["load_copy"] = median(lambda: ztnp.load_file(p, copy=True)["t"].sum(dtype=np.float32) if False else ztnp.load_file(p, copy=True), runs)
comp = np.load(os.path.join(d, "comp.npy"))
pz = os.path.join(d, "upz.zt")
def rmz():
    if os.path.exists(pz): os.remove(pz)
out["save_zstd"] = median(lambda: ztnp.save_file({"t": comp}, pz, compression=True), runs, rmz)
out["load_zstd"] = median(lambda: ztnp.load_file(pz, copy=True), runs)
ps = os.path.join(d, "up-small.zt")
tensors = {f"layers.{i}.w": small[i] for i in range(small.shape[0])}
def rms():
    if os.path.exists(ps): os.remove(ps)
out["save_small"] = median(lambda: ztnp.save_file(tensors, ps, align=4096), max(1, runs // 2), rms)
out["load_small"] = median(lambda: ztnp.load_file(ps, copy=False), runs)
print(json.dumps(out))
"""


def median(fn: Callable[[], Any], runs: int, setup: Callable[[], None] | None = None) -> float:
    xs = []
    for _ in range(runs):
        if setup:
            setup()
            os.sync()  # start every timed write with no dirty pages pending
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--upstream", help="python of a venv with ztensor==2.1.2")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()

    import safetensors.numpy as stnp

    import ztensor
    from ztensor import numpy as ztnp

    d = args.dir or tempfile.mkdtemp(prefix="zt-bench-")
    Path(d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = args.mib * (1 << 20) // 4
    big = rng.standard_normal(n, dtype=np.float32)
    comp = big.copy()
    comp[rng.random(n) < 0.8] = 0.0
    small = rng.standard_normal((10_000, 16), dtype=np.float32)
    np.save(os.path.join(d, "big.npy"), big)
    np.save(os.path.join(d, "comp.npy"), comp)
    np.save(os.path.join(d, "small.npy"), small)
    runs = args.runs
    ours: dict[str, float] = {}
    st: dict[str, float] = {}
    floor: dict[str, float] = {}

    def rm(p: str) -> Callable[[], None]:
        return lambda: os.path.exists(p) and os.remove(p)  # type: ignore[func-returns-value]

    zt_path, st_path, raw_path = (
        os.path.join(d, x) for x in ("ours.zt", "st.safetensors", "raw.bin")
    )

    ours["save_raw"] = median(lambda: ztnp.save_file({"t": big}, zt_path), runs, rm(zt_path))

    def st_save() -> None:
        stnp.save_file({"t": big}, st_path)
        fsync_path(st_path)

    st["save_raw"] = median(st_save, runs, rm(st_path))

    def plain_save() -> None:
        with open(raw_path, "wb") as f:
            f.write(memoryview(big).cast("B"))
            f.flush()
            os.fsync(f.fileno())

    floor["save_raw"] = median(plain_save, runs, rm(raw_path))

    ours["load_zero_copy"] = median(lambda: ztnp.load_file(zt_path)["t"].shape, runs * 4)
    ours["load_copy"] = median(lambda: ztnp.load_file(zt_path, copy=True), runs)
    st["load_copy"] = median(lambda: stnp.load_file(st_path), runs)
    floor["load_copy"] = median(lambda: np.fromfile(raw_path, dtype=np.float32), runs)

    zpath = os.path.join(d, "ours-z.zt")
    ours["save_zstd"] = median(
        lambda: ztnp.save_file({"t": comp}, zpath, compress=True), runs, rm(zpath)
    )
    ours["load_zstd"] = median(lambda: ztnp.load_file(zpath), runs)

    tensors = {f"layers.{i}.w": small[i] for i in range(small.shape[0])}
    spath, sst = os.path.join(d, "ours-small.zt"), os.path.join(d, "st-small.safetensors")
    ours["save_small"] = median(
        lambda: ztnp.save_file(tensors, spath), max(1, runs // 2), rm(spath)
    )

    def st_small() -> None:
        stnp.save_file(tensors, sst)
        fsync_path(sst)

    st["save_small"] = median(st_small, max(1, runs // 2), rm(sst))
    ours["load_small"] = median(lambda: ztnp.load_file(spath), runs)
    st["load_small"] = median(lambda: stnp.load_file(sst), runs)

    torch_rows: list[tuple[str, float, float]] = []
    try:
        import safetensors.torch as sttorch
        import torch

        import ztensor.torch as zttorch

        tt = {"t": torch.from_numpy(big)}
        tz, ts = os.path.join(d, "t.zt"), os.path.join(d, "t.safetensors")
        a = median(lambda: zttorch.save_file(tt, tz), runs, rm(tz))

        def st_t() -> None:
            sttorch.save_file(tt, ts)
            fsync_path(ts)

        b = median(st_t, runs, rm(ts))
        torch_rows.append(("torch save_file 256 MiB (fsync)", a, b))
        a = median(lambda: zttorch.load_file(tz), runs)
        b = median(lambda: sttorch.load_file(ts), runs)
        torch_rows.append(("torch load_file 256 MiB", a, b))
    except ImportError:
        pass

    up: dict[str, float] = {}
    if args.upstream:
        res = subprocess.run(
            [args.upstream, "-c", UPSTREAM_CHILD, d, str(args.mib), str(runs)],
            capture_output=True,
            text=True,
        )
        if res.returncode == 0:
            up = json.loads(res.stdout)
        else:
            print("upstream run failed:", res.stderr[-2000:], file=sys.stderr)

    def ms(x: float | None) -> str:
        return f"{x * 1e3:9.2f}" if x is not None else "        -"

    def ratio(a: float, b: float | None) -> str:
        return f"{a / b:6.2f}x" if b else "      -"

    print(
        f"ztensor {ztensor.__version__} Python benchmark: {args.mib} MiB f32, 10,000 x 16 f32; median of {runs}; ms"
    )
    print(
        f"{'measurement':<32} {'ours':>9} {'safetens':>9} {'upstream':>9} {'floor':>9} {'vs st':>7} {'vs up':>7} {'vs flr':>7}"
    )
    rows = [
        ("save raw (fsync)", "save_raw"),
        ("load zero-copy", "load_zero_copy"),
        ("load copy", "load_copy"),
        ("save zstd-3 (80% zeros)", "save_zstd"),
        ("load zstd-3 (80% zeros)", "load_zstd"),
        ("save 10,000 small (fsync)", "save_small"),
        ("load 10,000 small", "load_small"),
    ]
    for label, key in rows:
        a = ours[key]
        print(
            f"{label:<32} {ms(a)} {ms(st.get(key))} {ms(up.get(key))} {ms(floor.get(key))} "
            f"{ratio(a, st.get(key))} {ratio(a, up.get(key))} {ratio(a, floor.get(key))}"
        )
    for label, a, b in torch_rows:
        print(f"{label:<32} {ms(a)} {ms(b)} {ms(None)} {ms(None)} {ratio(a, b)}")
    print(
        "ratios are ours / theirs: below 1.00x means faster. safetensors saves are followed by an fsync so both sides are durable."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
