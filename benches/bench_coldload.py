"""Cold- and warm-cache load benchmark: ztensor's parallel `pread` loader
against mmap-then-copy and safetensors' `load_file`, on the same tensors,
in one run. Prints medians (seconds and GB/s) side by side.

    python benches/bench_coldload.py [--gib 1.5] [--runs 3] [--dir DIR]
        [--cold fadvise|drop-caches]

Loaders timed (each returns writable arrays the caller owns):

- `zt parallel`: `ztensor.numpy.load_file(p, copy=True)`: several threads
  issue 8 MiB `pread`s straight into the new arrays; xxh3 digests checked.
- `zt 1 thread`: the same with `threads=1` (one `pread` at a time).
- `zt mmap+copy`: `np.array(v)` of every zero-copy mapped view
  (`load_file(p)`), i.e. page faults then a copy.
- `safetensors numpy` / `safetensors torch`: `safetensors.numpy.load_file`
  and, when torch is importable, `safetensors.torch.load_file`.

Cold runs drop the files' pages from the page cache before every timed
load: `fadvise` (default) uses `posix_fadvise(POSIX_FADV_DONTNEED)` on the
two files after `fsync` (checked with `fincore` when installed); with
`drop-caches` it writes 3 to /proc/sys/vm/drop_caches (root only; drops
every file's pages machine-wide). A benchmark, not a test: nothing fails
on a slow machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def load_avg() -> str:
    """The machine's 1/5/15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def resident(path: Path) -> str:
    """Resident page-cache bytes of `path` as `fincore` reports, or '?'."""
    if shutil.which("fincore") is None:
        return "?"
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def drop(paths: list[Path], how: str) -> None:
    """Evicts `paths` from the page cache.

    Args:
        paths: Files to evict.
        how: `'fadvise'` (per file) or `'drop-caches'` (machine-wide).

    Raises:
        OSError: drop_caches cannot be written.
    """
    os.sync()
    if how == "drop-caches":
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def make_tensors(gib: float, seed: int = 0) -> dict[str, np.ndarray]:
    """A model-like set: per layer four 2048x2048 f32 matrices and two
    small vectors of odd length, until about `gib` GiB."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    total, layer = 0, 0
    target = int(gib * (1 << 30))
    while total < target:
        for k, shape in (
            ("q", (2048, 2048)),
            ("k", (2048, 2048)),
            ("v", (2048, 2048)),
            ("o", (2048, 2048)),
            ("norm", (2047,)),
            ("bias", (513,)),
        ):
            a = rng.standard_normal(shape, dtype=np.float32)
            out[f"layers.{layer}.{k}"] = a
            total += a.nbytes
        layer += 1
    return out


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes (its result is dropped after)."""
    t = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t
    del result
    gc.collect()
    return elapsed


def main() -> int:
    """Runs the benchmark and prints the table.

    Returns:
        The process exit code.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=1.5, help="data size in GiB")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per cell (median)")
    ap.add_argument("--dir", type=Path, default=None, help="where the files go")
    ap.add_argument("--cold", choices=["fadvise", "drop-caches"], default="fadvise")
    args = ap.parse_args()

    import safetensors.numpy as stnp

    import ztensor.numpy as ztnp

    try:
        import safetensors.torch as sttorch
    except ImportError:
        sttorch = None

    base = args.dir or Path(tempfile.mkdtemp(prefix="zt-coldload-"))
    base.mkdir(parents=True, exist_ok=True)
    zt_path, st_path = base / "model.zt", base / "model.safetensors"
    print(f"load at start: {load_avg()} ({os.cpu_count()} cores)")
    tensors = make_tensors(args.gib)
    nbytes = sum(a.nbytes for a in tensors.values())
    ztnp.save_file(tensors, zt_path)
    stnp.save_file(tensors, str(st_path))
    names = list(tensors)
    reference = {n: tensors[n] for n in names[:6]}
    del tensors
    gc.collect()
    print(
        f"{len(names)} tensors, {nbytes / 1e9:.2f} GB; "
        f"{zt_path.stat().st_size / 1e9:.2f} GB .zt, "
        f"{st_path.stat().st_size / 1e9:.2f} GB .safetensors in {base}"
    )

    loaders: dict[str, tuple[Path, Callable[[], Any]]] = {
        "zt parallel": (zt_path, lambda: ztnp.load_file(zt_path, copy=True)),
        "zt 1 thread": (zt_path, lambda: ztnp.load_file(zt_path, copy=True, threads=1)),
        "zt mmap+copy": (
            zt_path,
            lambda: {k: np.array(v) for k, v in ztnp.load_file(zt_path).items()},
        ),
        "safetensors numpy": (st_path, lambda: stnp.load_file(str(st_path))),
    }
    if sttorch is not None:
        loaders["safetensors torch"] = (st_path, lambda: sttorch.load_file(str(st_path)))

    # Every loader returns the same bytes.
    for label, (_, fn) in loaders.items():
        got = fn()
        for n, want in reference.items():
            g = got[n].numpy() if hasattr(got[n], "numpy") else got[n]
            if not np.array_equal(g, want):
                print(f"{label}: {n} differs", file=sys.stderr)
                return 1
        del got
    gc.collect()

    cold: dict[str, list[float]] = {k: [] for k in loaders}
    warm: dict[str, list[float]] = {k: [] for k in loaders}
    for _ in range(args.runs):
        for label, (path, fn) in loaders.items():
            drop([zt_path, st_path], args.cold)
            left = resident(path)
            cold[label].append(timed(fn))
            if left not in ("0", "0B", "?"):
                print(f"note: {path.name} still had {left} resident before a cold run")
        for label, (_, fn) in loaders.items():
            fn()
            warm[label].append(timed(fn))

    print(f"\ncold = {args.cold}; medians of {args.runs} runs; GB/s = {nbytes / 1e9:.2f} GB / s")
    print(f"{'loader':<20}{'cold s':>9}{'cold GB/s':>11}{'warm s':>9}{'warm GB/s':>11}")
    for label in loaders:
        c, w = statistics.median(cold[label]), statistics.median(warm[label])
        print(f"{label:<20}{c:>9.3f}{nbytes / c / 1e9:>11.2f}{w:>9.3f}{nbytes / w / 1e9:>11.2f}")
    print(f"\nload at end: {load_avg()}")
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
