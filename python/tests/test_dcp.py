"""torch.distributed.checkpoint on `.zt` files (ztensor.torch.dcp).

The distributed tests follow PyTorch's own CPU recipe: ranks are started with
`torch.multiprocessing` and join a gloo process group through a file://
rendezvous. They start from a fork server that imported torch once (a plain
fork of this process could inherit a half-used thread pool and hang; a
spawned child re-imports torch, which is slow on a busy machine). The model is sharded with FSDP2 (`fully_shard`, whose parameters
and optimizer state are DTensors) and a few tensors are placed by hand with
`distribute_tensor` (Shard(0), Shard(1), Replicate) so resharding crosses
both dimensions. Expected values are computed by the ranks (full tensors) and
stored with `ztensor.torch.save_file` for the parent to compare.
"""

from __future__ import annotations

import os
import shutil
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import torch.distributed as dist  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import ztensor  # noqa: E402
from ztensor.torch import load_file, save_file  # noqa: E402
from ztensor.torch.dcp import (  # noqa: E402
    METADATA_FILE,
    CheckpointError,
    IncompleteCheckpointError,
    ZtStorageReader,
    ZtStorageWriter,
)

warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
warnings.filterwarnings("ignore", message=".*process group is not initialized.*")


# -- helpers run inside the spawned ranks -------------------------------------


def _init(rank: int, world: int, root: str) -> Any:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{root}/pg-{world}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (world,))


def _model(mesh: Any, seed: int) -> tuple[Any, Any]:
    """A small FSDP2 model (uneven row counts) and an Adam that took a step."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 7), torch.nn.ReLU(), torch.nn.Linear(7, 5))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
    return model, opt


def _hand_placed(mesh: Any, swap: bool) -> dict[str, Any]:
    """DTensors placed by hand; `swap` shards each along the other dimension."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    g = torch.Generator().manual_seed(5)
    w = torch.randn(13, 6, generator=g)
    cols = torch.randn(4, 11, generator=g).to(torch.bfloat16)
    ids = torch.arange(30, dtype=torch.int64).reshape(5, 6)
    return {
        "w": distribute_tensor(w, mesh, [Shard(1) if swap else Shard(0)]),
        "cols": distribute_tensor(cols, mesh, [Shard(0) if swap else Shard(1)]),
        "ids": distribute_tensor(ids, mesh, [Replicate()]),
        "scale": torch.tensor(0.25),
        "flags": torch.tensor([True, False, True]),
    }


def _full(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every tensor of a nested state dict, unsharded, by dotted path."""
    from torch.distributed.tensor import DTensor

    out: dict[str, Any] = {}
    for k, v in state.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_full(v, key + "."))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    out.update(_full(item, f"{key}.{i}."))
        elif isinstance(v, DTensor):
            out[key] = v.full_tensor().clone()
        elif isinstance(v, torch.Tensor):
            out[key] = v.clone()
    return out


def _state(mesh: Any, seed: int, swap: bool) -> tuple[dict[str, Any], Any, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, opt = _model(mesh, seed)
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd, "dt": _hand_placed(mesh, swap)}
    state["extra"] = {"epoch": 3, "tag": "run-7"}
    return state, model, opt


def _save_worker(rank: int, world: int, root: str) -> None:
    mesh = _init(rank, world, root)
    state, _, _ = _state(mesh, seed=1, swap=False)
    dcp.save(state, storage_writer=ZtStorageWriter(f"{root}/raw"))
    dcp.save(state, storage_writer=ZtStorageWriter(f"{root}/zstd", compress=True))
    full = _full(state)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in full.items()}, f"{root}/expected.zt")
    # Load back on the same ranks into a fresh model (other seed) and compare.
    fresh, model, opt = _state(mesh, seed=2, swap=False)
    fresh["extra"] = {"epoch": 0, "tag": ""}
    dcp.load(fresh, storage_reader=ZtStorageReader(f"{root}/zstd"))
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, opt, model_state_dict=fresh["model"], optim_state_dict=fresh["optim"])
    got = _full(fresh)
    assert fresh["extra"] == {"epoch": 3, "tag": "run-7"}
    assert got.keys() == full.keys()
    for k in full:
        assert torch.equal(got[k], full[k]), k
    dist.destroy_process_group()


def _load3_worker(rank: int, world: int, root: str) -> None:
    mesh = _init(rank, world, root)
    expected = load_file(f"{root}/expected.zt")
    for ckpt in ("raw", "zstd"):
        state, _, _ = _state(mesh, seed=3, swap=True)
        state["extra"] = {"epoch": None, "tag": None}
        dcp.load(state, storage_reader=ZtStorageReader(f"{root}/{ckpt}"))
        got = _full(state)
        assert got.keys() == expected.keys()
        for k in expected:
            assert torch.equal(got[k], expected[k]), (ckpt, k)
        assert state["extra"] == {"epoch": 3, "tag": "run-7"}
    dist.destroy_process_group()


class _DieWhileWriting(ZtStorageWriter):
    """Kills this process after the second item of its plan was resolved,
    while its data file is half written."""

    def write_data(self, plan: Any, planner: Any) -> Any:
        class Dying:
            count = 0

            def resolve_data(self, item: Any) -> Any:
                Dying.count += 1
                if Dying.count == 2:
                    os._exit(17)
                return planner.resolve_data(item)

        return super().write_data(plan, Dying())


def _kill_worker(rank: int, world: int, root: str, ckpt: str) -> None:
    mesh = _init(rank, world, root)
    from torch.distributed.tensor import Shard, distribute_tensor

    big = distribute_tensor(torch.full((64, 8), 2.0), mesh, [Shard(0)])
    state = {"a": big, "b": torch.ones(3), "c": torch.zeros(2)}
    writer = _DieWhileWriting(ckpt) if rank == 1 else ZtStorageWriter(ckpt)
    dcp.save(state, storage_writer=writer)  # rank 0 fails when rank 1 dies
    dist.destroy_process_group()


_START = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
if _START == "forkserver":
    mp.get_context(_START).set_forkserver_preload(["torch", "torch.distributed.checkpoint"])


def _start(target: Any, world: int, *args: Any) -> None:
    mp.start_processes(target, args=(world, *args), nprocs=world, join=True, start_method=_START)


def _run_ranks(target: Any, world: int, *args: Any, expect_ok: bool = True) -> list[int | None]:
    ctx = mp.get_context(_START)
    procs = [ctx.Process(target=target, args=(rank, world, *args)) for rank in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=100)
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
        codes.append(p.exitcode)
    if expect_ok:
        assert codes == [0] * world, f"rank exit codes {codes}"
    return codes


# -- tests --------------------------------------------------------------------


def _template(expected: dict[str, Any]) -> dict[str, Any]:
    """A nested state dict of empty full-size tensors shaped like `_state`."""
    out: dict[str, Any] = {"model": {}, "optim": {"state": {}, "param_groups": [{}]}, "dt": {}}
    for key, v in expected.items():
        parts = key.split(".")
        if parts[0] == "model":
            out["model"][".".join(parts[1:])] = torch.zeros_like(v)
        elif parts[0] == "dt":
            out["dt"][parts[1]] = torch.zeros_like(v)
        elif parts[:2] == ["optim", "state"]:
            fqn, slot = ".".join(parts[2:-1]), parts[-1]
            out["optim"]["state"].setdefault(fqn, {})[slot] = torch.zeros_like(v)
    out["optim"]["param_groups"] = [{"lr": 0.0, "params": []}]
    out["extra"] = {"epoch": None, "tag": None}
    return out


class TestDistributed:
    def test_save_on_2_load_on_2_1_and_3(self, tmp_path: Path) -> None:
        root = str(tmp_path)
        _start(_save_worker, 2, root)
        for ckpt in ("raw", "zstd"):
            files = sorted(os.listdir(tmp_path / ckpt))
            assert METADATA_FILE in files
            data = [f for f in files if f != METADATA_FILE]
            assert len(data) == 2, files
            with ztensor.Reader(tmp_path / ckpt / data[0]) as r:
                encodings = {m.encoding for m in r.tensors}
                assert all(m.checksum for m in r.tensors)
            assert encodings == ({"zstd"} if ckpt == "zstd" else {"raw"})

        # 2 -> 1: this process, no process group, plain full-size tensors.
        expected = load_file(tmp_path / "expected.zt")
        for ckpt in ("raw", "zstd"):
            state = _template(expected)
            dcp.load(state, storage_reader=ZtStorageReader(tmp_path / ckpt, verify=True))
            for key, want in expected.items():
                node: Any = state
                parts = key.split(".")
                if parts[:2] == ["optim", "state"]:
                    parts = ["optim", "state", ".".join(parts[2:-1]), parts[-1]]
                elif parts[0] == "model":
                    parts = ["model", ".".join(parts[1:])]
                for p in parts:
                    node = node[p]
                assert torch.equal(node, want), (ckpt, key)
            assert state["extra"] == {"epoch": 3, "tag": "run-7"}
            assert state["optim"]["param_groups"][0]["lr"] == 1e-2

        # 2 -> 3: three ranks, each tensor sharded along the other dimension.
        _start(_load3_worker, 3, root)

    def test_rank_killed_mid_save(self, tmp_path: Path) -> None:
        fresh = tmp_path / "fresh"
        codes = _run_ranks(_kill_worker, 2, str(tmp_path), str(fresh), expect_ok=False)
        assert codes[1] == 17 and codes[0] != 0, codes
        assert not (fresh / METADATA_FILE).exists()
        with pytest.raises(IncompleteCheckpointError, match="save did not finish"):
            dcp.load({"b": torch.empty(3)}, storage_reader=ZtStorageReader(fresh))

    def test_killed_save_keeps_previous_checkpoint(self, tmp_path: Path) -> None:
        ckpt = tmp_path / "ckpt"
        old = {"a": torch.full((64, 8), 1.0), "b": torch.full((3,), 5.0), "c": torch.ones(2)}
        dcp.save(old, storage_writer=ZtStorageWriter(ckpt))
        before = set(os.listdir(ckpt))
        _run_ranks(_kill_worker, 2, str(tmp_path), str(ckpt), expect_ok=False)
        assert set(os.listdir(ckpt)) != before  # the killed save did write
        got = {"a": torch.empty(64, 8), "b": torch.empty(3), "c": torch.empty(2)}
        dcp.load(got, storage_reader=ZtStorageReader(ckpt))
        for k in old:
            assert torch.equal(got[k], old[k]), k
        # A later complete save replaces it and removes the stale files.
        new = {k: v + 1 for k, v in old.items()}
        dcp.save(new, storage_writer=ZtStorageWriter(ckpt))
        assert len([f for f in os.listdir(ckpt) if f.endswith(".zt")]) == 2
        dcp.load(got, storage_reader=ZtStorageReader(ckpt))
        assert all(torch.equal(got[k], new[k]) for k in new)


class TestSingleProcess:
    def _sd(self) -> dict[str, Any]:
        g = torch.Generator().manual_seed(0)
        return {
            "f32": torch.randn(9, 4, generator=g),
            "view": torch.randn(6, 10, generator=g)[1:5, ::2],  # non-contiguous
            "bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16),
            "f8": torch.randn(8, generator=g).to(torch.float8_e4m3fn),
            "i64": torch.arange(12).reshape(3, 4),
            "bool": torch.tensor([[True, False], [False, True]]),
            "scalar": torch.tensor(3.5),
            "empty": torch.zeros(0, 3),
            "obj": {"name": "zt", "steps": [1, 2, 3]},  # two bytes items
        }

    @pytest.mark.parametrize("compress", [False, True, 9])
    def test_round_trip_every_dtype(self, tmp_path: Path, compress: bool | int) -> None:
        sd = self._sd()
        dcp.save(sd, storage_writer=ZtStorageWriter(tmp_path, compress=compress))
        out = {
            k: torch.empty_like(v) if isinstance(v, torch.Tensor) else None for k, v in sd.items()
        }
        out["obj"] = {"name": None, "steps": None}
        dcp.load(out, storage_reader=ZtStorageReader(tmp_path, verify=True))
        for k, v in sd.items():
            if isinstance(v, torch.Tensor):
                assert out[k].dtype == v.dtype
                got, want = out[k].reshape(-1), v.contiguous().reshape(-1)
                assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)), k
        assert out["obj"] == sd["obj"]

    def test_files_are_self_describing(self, tmp_path: Path) -> None:
        dcp.save(self._sd(), storage_writer=ZtStorageWriter(tmp_path))
        with ztensor.Reader(tmp_path / METADATA_FILE) as r:
            doc = r.attributes
            assert len(r) == 0
        assert doc["format"] == "ztensor.dcp/1"
        kinds = {e["fqn"]: e["kind"] for e in doc["entries"]}
        assert kinds["obj.name"] == "bytes" and kinds["bf16"] == "tensor"
        data = [f for f in os.listdir(tmp_path) if f != METADATA_FILE]
        with ztensor.Reader(tmp_path / data[0]) as r:
            assert r.attributes["save_id"] == doc["save_id"]
            assert r.metadata("obj.steps").dtype_str == "uint8"
            np.testing.assert_array_equal(r["i64"], np.arange(12).reshape(3, 4))

    def test_validate_checkpoint_id(self, tmp_path: Path) -> None:
        assert ZtStorageWriter.validate_checkpoint_id(tmp_path)
        assert not ZtStorageWriter.validate_checkpoint_id("s3://bucket/x")
        assert not ZtStorageReader.validate_checkpoint_id(tmp_path)
        dcp.save({"x": torch.ones(2)}, storage_writer=ZtStorageWriter(tmp_path))
        assert ZtStorageReader.validate_checkpoint_id(tmp_path)

    def test_overwrite_false_refuses(self, tmp_path: Path) -> None:
        dcp.save({"x": torch.ones(2)}, storage_writer=ZtStorageWriter(tmp_path))
        with pytest.raises(BaseException, match="overwrite=False"):
            dcp.save(
                {"x": torch.ones(2)}, storage_writer=ZtStorageWriter(tmp_path, overwrite=False)
            )

    def test_dtype_mismatch_is_clear(self, tmp_path: Path) -> None:
        dcp.save({"x": torch.ones(2, 3)}, storage_writer=ZtStorageWriter(tmp_path))
        with pytest.raises(BaseException, match="stored as float32, loading into int64"):
            dcp.load(
                {"x": torch.zeros(2, 3, dtype=torch.int64)},
                storage_reader=ZtStorageReader(tmp_path),
            )


class TestHostileCheckpoint:
    @pytest.fixture()
    def ckpt(self, tmp_path: Path) -> Path:
        sd = {"w": torch.arange(24.0).reshape(6, 4), "obj": ("k", 1)}
        dcp.save(sd, storage_writer=ZtStorageWriter(tmp_path / "c"))
        return tmp_path / "c"

    def _doc(self, ckpt: Path) -> dict[str, Any]:
        with ztensor.Reader(ckpt / METADATA_FILE) as r:
            doc: dict[str, Any] = r.attributes
        return doc

    def _rewrite(self, ckpt: Path, doc: dict[str, Any]) -> None:
        with ztensor.Writer(ckpt / METADATA_FILE, metadata=doc):
            pass

    def _load(self, ckpt: Path) -> None:
        dcp.load({"w": torch.empty(6, 4), "obj": None}, storage_reader=ZtStorageReader(ckpt))

    def test_missing_metadata(self, ckpt: Path) -> None:
        (ckpt / METADATA_FILE).unlink()
        with pytest.raises(IncompleteCheckpointError, match="dcp-metadata.zt is missing"):
            self._load(ckpt)

    @pytest.mark.parametrize("keep", [0, 10, 100, -1])
    def test_truncated_metadata(self, ckpt: Path, keep: int) -> None:
        data = (ckpt / METADATA_FILE).read_bytes()
        (ckpt / METADATA_FILE).write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="damaged metadata file"):
            self._load(ckpt)

    def test_not_a_zt_file(self, ckpt: Path) -> None:
        (ckpt / METADATA_FILE).write_bytes(b"\x80\x04K\x01.")  # a pickle
        with pytest.raises(CheckpointError):
            self._load(ckpt)

    @pytest.mark.parametrize(
        "edit, message",
        [
            (lambda d: d.update(format="other/1"), "format: 'other/1' is not"),
            (lambda d: d.update(entries="x"), "entries: expected a list, got str"),
            (lambda d: d["entries"][0].update(size=["6", 4]), r"size\[0\]: expected an integer"),
            (lambda d: d["entries"][0].update(size=[6, True]), r"size\[1\]: expected an integer"),
            (lambda d: d["entries"][0].update(dtype="Tensor"), "'Tensor' is not a torch dtype"),
            (lambda d: d["entries"][0].update(kind="code"), "neither 'tensor' nor 'bytes'"),
            (lambda d: d["entries"][0]["chunks"][0].update(offsets=[5, 0]), "passes the end"),
            (
                lambda d: d["entries"][0]["chunks"][0].update(sizes=[6]),
                "1 dimensions, the tensor has 2",
            ),
            (lambda d: d["entries"][0]["chunks"][0].update(file=7), r"file: 7 is outside 0..0"),
            (lambda d: d["entries"][0]["chunks"][0].update(offsets=[-1, 0]), "outside"),
            (lambda d: d["files"][0].update(name="../../etc/passwd"), "not a data file name"),
            (lambda d: d["files"][0].update(size=-3), "size: -3 is outside"),
            (lambda d: d.update(save_id=7), "save_id: expected a string"),
            (lambda d: d.update(planner_data={"w": [{"x": 1}]}), "expected a string or integer"),
            (lambda d: d["entries"].append(dict(d["entries"][0])), "appears twice"),
        ],
    )
    def test_malformed_fields(self, ckpt: Path, edit: Any, message: str) -> None:
        doc = self._doc(ckpt)
        doc["entries"].sort(key=lambda e: e["kind"] != "tensor")
        edit(doc)
        self._rewrite(ckpt, doc)
        with pytest.raises(CheckpointError, match=message):
            self._load(ckpt)

    def test_chunk_bigger_than_stored_tensor(self, ckpt: Path) -> None:
        # Consistent metadata claiming a larger tensor than the data file holds.
        doc = self._doc(ckpt)
        e = next(e for e in doc["entries"] if e["kind"] == "tensor")
        e["size"] = [60, 4]
        e["chunks"][0]["sizes"] = [60, 4]
        self._rewrite(ckpt, doc)
        with pytest.raises(
            BaseException, match=r"stored shape \(6, 4\), the metadata says \(60, 4\)"
        ):
            dcp.load({"w": torch.empty(60, 4), "obj": None}, storage_reader=ZtStorageReader(ckpt))

    def test_chunk_shape_differs_from_stored(self, ckpt: Path) -> None:
        doc = self._doc(ckpt)
        e = next(e for e in doc["entries"] if e["kind"] == "tensor")
        e["size"] = [3, 4]
        e["chunks"][0]["sizes"] = [3, 4]
        self._rewrite(ckpt, doc)
        with pytest.raises(
            BaseException, match=r"stored shape \(6, 4\), the metadata says \(3, 4\)"
        ):
            dcp.load({"w": torch.empty(3, 4), "obj": None}, storage_reader=ZtStorageReader(ckpt))

    def test_data_file_missing_truncated_or_foreign(self, ckpt: Path, tmp_path: Path) -> None:
        data = next(f for f in os.listdir(ckpt) if f != METADATA_FILE)
        original = (ckpt / data).read_bytes()
        (ckpt / data).unlink()
        with pytest.raises(BaseException, match="data file of the checkpoint is missing"):
            self._load(ckpt)
        (ckpt / data).write_bytes(original[:-9])
        with pytest.raises(BaseException, match="the metadata says"):
            self._load(ckpt)
        # A data file of another save, renamed into place (same size).
        other = tmp_path / "other"
        dcp.save({"w": torch.zeros(6, 4), "obj": ("k", 1)}, storage_writer=ZtStorageWriter(other))
        foreign = next(f for f in os.listdir(other) if f != METADATA_FILE)
        shutil.copy(other / foreign, ckpt / data)
        assert (ckpt / data).stat().st_size == len(original)
        with pytest.raises(BaseException, match="not a data file of save"):
            self._load(ckpt)
