"""The global metadata of a DCP checkpoint as plain data (no pickle).

`encode` turns DCP's `Metadata` (plus where each item lives) into a tree of
dicts, lists, strings and integers that the coordinator stores as the
attributes of a small `.zt` file; `decode` checks every field of such a tree
read from disk and rebuilds the torch objects. Nothing read from a file is
ever executed or imported: dtypes are looked up in a fixed table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .._errors import FormatError

FORMAT = "ztensor.dcp/1"
DATA_FORMAT = "ztensor.dcp-data/1"
DCP_VERSION = "1.0.0"
MAX_RANK = 64
MAX_NAME_BYTES = 1024
# `{save_id}-{plan index}.zt`: no directories, no dot files, nothing to traverse.
DATA_FILE = re.compile(r"\A[0-9a-f]{32}-[0-9]{5,9}\.zt\Z")
SAVE_ID = re.compile(r"\A[0-9a-f]{32}\Z")


class CheckpointError(FormatError):
    """A DCP checkpoint on `.zt` files is malformed, inconsistent or
    does not match the state dict it is loaded into."""


class IncompleteCheckpointError(CheckpointError):
    """No complete checkpoint is at the path: its metadata file (written
    last, after every rank's data file) is missing, so the save never
    finished or the directory holds no checkpoint."""


@dataclass(frozen=True)
class PlanData:
    """What the coordinator tells each rank: the file it writes."""

    file: str
    save_id: str


@dataclass(frozen=True)
class ItemLocation:
    """Where one saved item lives: data file, tensor name in it, and the
    data file's size (checked before reading)."""

    file: str
    tensor: str
    file_size: int


def _torch() -> Any:
    import torch

    return torch


def dtype_name(dtype: Any) -> str:
    """`torch.float32` -> `"float32"`."""
    return str(dtype).removeprefix("torch.")


def _dtype(name: str, where: str) -> Any:
    torch = _torch()
    value = getattr(torch, name, None) if re.fullmatch(r"[a-z0-9_]{1,32}", name) else None
    if not isinstance(value, torch.dtype):
        raise CheckpointError(f"{where}: {name!r} is not a torch dtype")
    return value


def encode(metadata: Any, storage: dict[Any, ItemLocation], save_id: str) -> dict[str, Any]:
    """The checkpoint's metadata as plain data.

    Args:
        metadata: DCP's global `Metadata` from the planner.
        storage: Every saved item's location, by its `MetadataIndex`.
        save_id: The id shared by this save's data files.

    Returns:
        A tree of dicts, lists, strings, integers, booleans and None.

    Raises:
        CheckpointError: An item of the metadata has no saved data, or the
            planner data is not the default planner's (fqn -> key path).
    """
    from torch.distributed.checkpoint.metadata import (
        BytesStorageMetadata,
        MetadataIndex,
        TensorStorageMetadata,
    )

    files: dict[str, int] = {}
    file_index: dict[str, int] = {}

    def locate(index: Any) -> dict[str, Any]:
        loc = storage.get(index)
        if not isinstance(loc, ItemLocation):
            raise CheckpointError(f"no data was written for {index}")
        if loc.file not in file_index:
            file_index[loc.file] = len(file_index)
            files[loc.file] = loc.file_size
        return {"file": file_index[loc.file], "tensor": loc.tensor}

    entries = []
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            chunks = []
            for i, chunk in enumerate(md.chunks):
                where = locate(MetadataIndex(fqn, chunk.offsets, i))
                chunks.append({"offsets": list(chunk.offsets), "sizes": list(chunk.sizes), **where})
            entries.append(
                {
                    "fqn": fqn,
                    "kind": "tensor",
                    "dtype": dtype_name(md.properties.dtype),
                    "requires_grad": bool(md.properties.requires_grad),
                    "size": list(md.size),
                    "chunks": chunks,
                }
            )
        elif isinstance(md, BytesStorageMetadata):
            entries.append({"fqn": fqn, "kind": "bytes", **locate(MetadataIndex(fqn))})
        else:
            raise CheckpointError(f"{fqn!r}: unknown storage metadata {type(md).__name__}")
    sm = metadata.storage_meta
    return {
        "format": FORMAT,
        "save_id": save_id,
        "dcp_version": metadata.version or DCP_VERSION,
        "files": [{"name": name, "size": size} for name, size in files.items()],
        "entries": entries,
        "planner_data": _encode_planner_data(metadata.planner_data),
        "storage_meta": (
            None
            if sm is None
            else {
                "checkpoint_id": None if sm.checkpoint_id is None else str(sm.checkpoint_id),
                "save_id": sm.save_id,
                "load_id": sm.load_id,
                "modules": list(sm.modules),
            }
        ),
    }


def _encode_planner_data(data: Any) -> dict[str, list[str | int]] | None:
    if data is None:
        return None
    ok = isinstance(data, dict) and all(
        isinstance(k, str)
        and isinstance(v, (tuple, list))
        and all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in v)
        for k, v in data.items()
    )
    if not ok:
        raise CheckpointError(
            "planner_data must be None or map each fqn to a key path of str/int "
            f"(what DefaultSavePlanner writes); got {type(data).__name__}, which "
            "cannot be stored without pickle"
        )
    return {k: list(v) for k, v in data.items()}


class _Checker:
    """Type and range checks of a decoded tree, naming the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {where}: {msg}")

    def map_(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, f"expected a map, got {type(v).__name__}")
        return v

    def list_(self, v: Any, where: str, limit: int | None = None) -> list[Any]:
        if not isinstance(v, list):
            raise self.fail(where, f"expected a list, got {type(v).__name__}")
        if limit is not None and len(v) > limit:
            raise self.fail(where, f"{len(v)} entries, more than the limit {limit}")
        return v

    def text(self, v: Any, where: str, limit: int = MAX_NAME_BYTES) -> str:
        if not isinstance(v, str):
            raise self.fail(where, f"expected a string, got {type(v).__name__}")
        if len(v.encode()) > limit:
            raise self.fail(where, f"{len(v.encode())} bytes, more than the limit {limit}")
        return v

    def opt_text(self, v: Any, where: str) -> str | None:
        return None if v is None else self.text(v, where)

    def count(self, v: Any, where: str, upper: int | None = None) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(where, f"expected an integer, got {type(v).__name__}")
        if v < 0 or (upper is not None and v >= upper):
            bound = f"0..{upper - 1}" if upper is not None else "≥ 0"
            raise self.fail(where, f"{v} is outside {bound}")
        return v

    def counts(self, v: Any, where: str, n: int | None = None) -> list[int]:
        items = self.list_(v, where, MAX_RANK)
        if n is not None and len(items) != n:
            raise self.fail(where, f"{len(items)} dimensions, the tensor has {n}")
        return [self.count(x, f"{where}[{i}]") for i, x in enumerate(items)]

    def key(self, d: dict[str, Any], k: str, where: str) -> Any:
        if k not in d:
            raise self.fail(where, f"missing field {k!r}")
        return d[k]


def decode(doc: Any, source: str) -> tuple[Any, str, list[tuple[str, int]]]:
    """Checks a metadata tree read from disk and rebuilds DCP's objects.

    Args:
        doc: The attributes of the metadata file.
        source: The file's path, for messages.

    Returns:
        (metadata, save_id, files): DCP `Metadata` whose `storage_data`
        maps each `MetadataIndex` to an `ItemLocation`; the save id; the
        data files with their sizes.

    Raises:
        CheckpointError: A field is missing, of the wrong type, out of
            range, or a chunk lies outside its tensor.
    """
    from torch.distributed.checkpoint.metadata import (
        BytesStorageMetadata,
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        StorageMeta,
        TensorProperties,
        TensorStorageMetadata,
    )

    torch = _torch()
    c = _Checker(source)
    root = c.map_(doc, "metadata")
    fmt = c.key(root, "format", "metadata")
    if fmt != FORMAT:
        raise c.fail("format", f"{fmt!r} is not {FORMAT!r}")
    save_id = c.text(c.key(root, "save_id", "metadata"), "save_id")
    if not SAVE_ID.match(save_id):
        raise c.fail("save_id", f"{save_id!r} is not 32 lowercase hex digits")
    version = c.text(c.key(root, "dcp_version", "metadata"), "dcp_version", 32)
    files: list[tuple[str, int]] = []
    for i, f in enumerate(c.list_(c.key(root, "files", "metadata"), "files")):
        w = f"files[{i}]"
        f = c.map_(f, w)
        name = c.text(c.key(f, "name", w), f"{w}.name")
        if not DATA_FILE.match(name) or not name.startswith(save_id):
            raise c.fail(f"{w}.name", f"{name!r} is not a data file name of save {save_id}")
        files.append((name, c.count(c.key(f, "size", w), f"{w}.size")))

    def locate(e: dict[str, Any], w: str) -> ItemLocation:
        k = c.count(c.key(e, "file", w), f"{w}.file", len(files))
        tensor = c.text(c.key(e, "tensor", w), f"{w}.tensor")
        return ItemLocation(files[k][0], tensor, files[k][1])

    state: dict[str, Any] = {}
    storage: dict[Any, ItemLocation] = {}
    for i, e in enumerate(c.list_(c.key(root, "entries", "metadata"), "entries")):
        w = f"entries[{i}]"
        e = c.map_(e, w)
        fqn = c.text(c.key(e, "fqn", w), f"{w}.fqn")
        if fqn in state:
            raise c.fail(f"{w}.fqn", f"{fqn!r} appears twice")
        kind = c.key(e, "kind", w)
        if kind == "bytes":
            state[fqn] = BytesStorageMetadata()
            storage[MetadataIndex(fqn)] = locate(e, w)
            continue
        if kind != "tensor":
            raise c.fail(f"{w}.kind", f"{kind!r} is neither 'tensor' nor 'bytes'")
        dtype = _dtype(c.text(c.key(e, "dtype", w), f"{w}.dtype"), f"{source}: {w}.dtype")
        grad = c.key(e, "requires_grad", w)
        if not isinstance(grad, bool):
            raise c.fail(f"{w}.requires_grad", f"expected a boolean, got {type(grad).__name__}")
        size = c.counts(c.key(e, "size", w), f"{w}.size")
        chunks = []
        for j, ch in enumerate(c.list_(c.key(e, "chunks", w), f"{w}.chunks")):
            cw = f"{w}.chunks[{j}]"
            ch = c.map_(ch, cw)
            offsets = c.counts(c.key(ch, "offsets", cw), f"{cw}.offsets", len(size))
            sizes = c.counts(c.key(ch, "sizes", cw), f"{cw}.sizes", len(size))
            for d, (o, n, full) in enumerate(zip(offsets, sizes, size)):
                if o + n > full:
                    raise c.fail(
                        f"{cw}",
                        f"offset {o} + size {n} in dimension {d} passes the end of "
                        f"the tensor's size {size}",
                    )
            chunk = ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes))
            chunks.append(chunk)
            storage[MetadataIndex(fqn, chunk.offsets, j)] = locate(ch, cw)
        props = TensorProperties(dtype=dtype, requires_grad=grad)
        state[fqn] = TensorStorageMetadata(props, torch.Size(size), chunks)
    planner_data = _decode_planner_data(c, root.get("planner_data"))
    sm_doc = root.get("storage_meta")
    storage_meta = None
    if sm_doc is not None:
        sm = c.map_(sm_doc, "storage_meta")
        modules = c.list_(sm.get("modules", []), "storage_meta.modules")
        storage_meta = StorageMeta(
            checkpoint_id=c.opt_text(sm.get("checkpoint_id"), "storage_meta.checkpoint_id"),
            save_id=c.opt_text(sm.get("save_id"), "storage_meta.save_id"),
            load_id=c.opt_text(sm.get("load_id"), "storage_meta.load_id"),
            modules=[c.text(m, f"storage_meta.modules[{i}]") for i, m in enumerate(modules)],
        )
    metadata = Metadata(
        state_dict_metadata=state,
        planner_data=planner_data,
        storage_data=storage,
        storage_meta=storage_meta,
        version=version,
    )
    return metadata, save_id, files


def _decode_planner_data(c: _Checker, v: Any) -> dict[str, tuple[str | int, ...]] | None:
    if v is None:
        return None
    out: dict[str, tuple[str | int, ...]] = {}
    for k, path in c.map_(v, "planner_data").items():
        w = f"planner_data[{k!r}]"
        parts = c.list_(path, w, MAX_RANK)
        for i, p in enumerate(parts):
            if isinstance(p, bool) or not isinstance(p, (str, int)):
                raise c.fail(f"{w}[{i}]", f"expected a string or integer, got {type(p).__name__}")
        out[c.text(k, "planner_data key")] = tuple(parts)
    return out
