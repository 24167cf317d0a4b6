"""torch.distributed.checkpoint storage layers side by side, in one run:
ours (`ZtStorageWriter`/`Reader`, raw and zstd) against DCP's own
`FileSystemWriter`/`FileSystemReader` (torch.save per item) and its
safetensors path (`HuggingFaceStorageWriter`/`Reader`).

Each layer saves the same state dict (bf16 weight matrices shaped like a
small transformer, plus an f32 optimizer-like moment per weight) from one
process, then loads it two ways:
  * load: one process loads everything (1 -> 1);
  * 2 ranks: two processes from a fork server (gloo, file:// rendezvous) each load half the
    rows of every tensor into a Shard(0) DTensor (1 -> 2 resharding); the
    slowest rank's time.
Runs alternate between layers; the median of `--repeat` runs is printed,
with the bytes on disk. Files stay in the page cache (warm reads).

    .venv-py/bin/python benches/bench_dcp.py --mib 256 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

from ztensor.torch.dcp import ZtStorageReader, ZtStorageWriter


def make_state(mib: int) -> dict[str, torch.Tensor]:
    """bf16 weights (2 bytes) and f32 moments (4 bytes): about `mib` MiB."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    rows, cols = 1024, 1024
    per_layer = rows * cols * (2 + 4)
    for i in range(max(1, (mib << 20) // per_layer)):
        w = (torch.randn(rows, cols, generator=g) * 0.02).to(torch.bfloat16)
        state[f"layers.{i}.weight"] = w
        state[f"optim.{i}.exp_avg"] = torch.randn(rows, cols, generator=g) * 1e-3
    return state


def layers() -> dict[str, tuple[Any, Any]]:
    """name -> (writer factory, reader factory)."""
    out: dict[str, tuple[Any, Any]] = {
        "zt raw": (lambda p: ZtStorageWriter(p), lambda p: ZtStorageReader(p)),
        "zt zstd-3": (lambda p: ZtStorageWriter(p, compress=3), lambda p: ZtStorageReader(p)),
        "dcp FileSystem": (
            lambda p: dcp.FileSystemWriter(p, thread_count=1),
            lambda p: dcp.FileSystemReader(p),
        ),
    }
    hf_w = getattr(dcp, "HuggingFaceStorageWriter", None)
    hf_r = getattr(dcp, "HuggingFaceStorageReader", None)
    if hf_w is not None and hf_r is not None:
        out["dcp HF safetensors"] = (lambda p: hf_w(p), lambda p: hf_r(p))
    return out


def disk_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def _half_worker(
    rank: int, world: int, pg_file: str, name: str, path: str, shapes: Any, q: Any
) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{pg_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=300),
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    state = {
        k: distribute_tensor(torch.empty(shape, dtype=dtype), mesh, [Shard(0)])
        for k, (shape, dtype) in shapes.items()
    }
    reader = layers()[name][1](path)
    dist.barrier()
    t = time.perf_counter()
    dcp.load(state, storage_reader=reader)
    took = torch.tensor([time.perf_counter() - t], dtype=torch.float64)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    if rank == 0:
        q.put(float(took))
    dist.destroy_process_group()


def load_on_ranks(root: str, name: str, path: str, state: dict[str, torch.Tensor]) -> float:
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":  # no inherited thread pools, torch imported once
        ctx.set_forkserver_preload(["torch", "torch.distributed.checkpoint"])
    q = ctx.SimpleQueue()
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    pg_file = os.path.join(root, f"pg-{time.monotonic_ns()}")
    procs = [
        ctx.Process(target=_half_worker, args=(r, 2, pg_file, name, path, shapes, q))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"{name}: a rank failed ({[p.exitcode for p in procs]})")
    return float(q.get())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="state dict size")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--no-ranks", action="store_true", help="skip the 2-rank load")
    args = ap.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    state = make_state(args.mib)
    total = sum(v.numel() * v.element_size() for v in state.values())
    root = tempfile.mkdtemp(prefix="bench-dcp-", dir=args.dir)
    times: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, int] = {}
    try:
        for rep in range(args.repeat):
            for name, (writer, reader) in layers().items():
                path = os.path.join(root, name.replace(" ", "_"))
                shutil.rmtree(path, ignore_errors=True)
                t = times.setdefault(name, {})
                start = time.perf_counter()
                dcp.save(state, storage_writer=writer(path))
                t.setdefault("save", []).append(time.perf_counter() - start)
                sizes[name] = disk_bytes(path)

                out = {k: torch.empty_like(v) for k, v in state.items()}
                start = time.perf_counter()
                dcp.load(out, storage_reader=reader(path))
                t.setdefault("load", []).append(time.perf_counter() - start)
                if rep == 0:
                    bad = [k for k in state if not torch.equal(out[k], state[k])]
                    if bad:
                        raise SystemExit(f"{name}: wrong values after load: {bad[:3]}")
                del out
                if not args.no_ranks:
                    t.setdefault("2 ranks", []).append(load_on_ranks(root, name, path, state))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"torch {torch.__version__}; state dict {total / 2**20:.0f} MiB, {len(state)} tensors")
    print(f"median of {args.repeat}; warm page cache; MB/s = state bytes / time")
    cols = ["save", "load"] + ([] if args.no_ranks else ["2 ranks"])
    head = f"{'layer':<20}{'on disk MiB':>12}" + "".join(f"{c + ' s':>11}{'MB/s':>8}" for c in cols)
    print(head)
    for name, t in times.items():
        row = f"{name:<20}{sizes[name] / 2**20:>12.1f}"
        for c in cols:
            m = statistics.median(t[c])
            row += f"{m:>11.3f}{total / m / 1e6:>8.0f}"
        print(row)


if __name__ == "__main__":
    main()
