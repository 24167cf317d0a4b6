"""torch.distributed.checkpoint (DCP) storage on `.zt` files.

Example:
    >>> import torch.distributed.checkpoint as dcp
    >>> from ztensor.torch.dcp import ZtStorageReader, ZtStorageWriter
    >>> dcp.save(state_dict, storage_writer=ZtStorageWriter("ckpt"))
    >>> dcp.load(state_dict, storage_reader=ZtStorageReader("ckpt"))

A checkpoint is a directory. Each rank writes one `.zt` file,
`{save_id}-{rank:05d}.zt`, holding its tensor chunks as tensors (raw or
zstd, each with a digest) and its non-tensor items (DCP's pickled extras,
such as optimizer hyper-parameters) as `uint8` tensors. When every rank has
written its file, the coordinator writes `dcp-metadata.zt`: a `.zt` file
whose attributes hold DCP's global metadata as plain data (no pickle, so
loading a checkpoint executes no code). Every file is written to a
temporary name, fsynced and renamed; the metadata file is written last, so
its presence marks the checkpoint complete. A save into a directory that
already holds a checkpoint leaves the old one loadable until the new
metadata replaces it; data files of older saves are removed afterwards.

Loading reads only the rows of each stored chunk that a rank needs (for
zstd parts, only the frames covering them), so a checkpoint saved on N
ranks loads on any number of ranks with any sharding.
"""

from __future__ import annotations

import dataclasses
import io
import os
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import ZTensorError, ZTensorFileNotFoundError, ZTensorValueError
from .._reader import Reader, TensorMetadata
from .._writer import Writer, _level
from . import _to_torch
from ._dcp_metadata import (
    DATA_FILE,
    DATA_FORMAT,
    DCP_VERSION,
    CheckpointError,
    IncompleteCheckpointError,
    ItemLocation,
    PlanData,
    decode,
    dtype_name,
    encode,
)

try:
    from torch.distributed.checkpoint.planner import LoadItemType, WriteItemType
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
    from torch.futures import Future
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("ztensor.torch.dcp needs PyTorch with torch.distributed") from e

if TYPE_CHECKING:
    import torch
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
    from torch.distributed.checkpoint.planner import (
        LoadPlan,
        LoadPlanner,
        ReadItem,
        SavePlan,
        SavePlanner,
        WriteItem,
    )

__all__ = [
    "METADATA_FILE",
    "CheckpointError",
    "IncompleteCheckpointError",
    "ZtStorageReader",
    "ZtStorageWriter",
]

METADATA_FILE = "dcp-metadata.zt"


def _local_path(checkpoint_id: str | os.PathLike[str]) -> bool:
    path = os.fspath(checkpoint_id)
    return isinstance(path, str) and "://" not in path


def _done(value: Any) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_result(value)
    return fut


class ZtStorageWriter(StorageWriter):
    """Writes a DCP checkpoint as one `.zt` file per rank plus a metadata
    `.zt` file written last by the coordinator.

    Args:
        path: The checkpoint directory (created if missing).
        compress: False (raw), True (zstd level 3) or a zstd level 1-22.
        checksum: Digest of every stored tensor: `'xxh3'`, `'crc32c'`,
            `'blake3'`, `'sha256'` or None.
        overwrite: Allow saving into a directory that already holds a
            complete checkpoint (it stays loadable until this save finishes).

    Raises:
        ZTensorValueError: `compress` is not a valid level.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compress: bool | int = False,
        checksum: str | None = "xxh3",
        overwrite: bool = True,
    ) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.compress = _level(compress) or False
        self.checksum = checksum
        self.overwrite = overwrite
        self.is_coordinator = False
        self.save_id = uuid.uuid4().hex

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint directory."""
        return self.path

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Starts a new save, optionally into another directory."""
        if checkpoint_id:
            self.path = os.fspath(checkpoint_id)
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Records whether this rank is the coordinator.

        Raises:
            ZTensorValueError: DCP runs without collectives (each rank its
                own metadata); this storage keeps one global metadata file.
        """
        self.is_coordinator = is_coordinator
        if not kwargs.get("use_collectives", True):
            raise ZTensorValueError(
                "ZtStorageWriter writes one global metadata file and needs "
                "dcp.save(..., use_collectives=True)"
            )

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Creates the directory; refuses to replace a checkpoint unless
        `overwrite`."""
        os.makedirs(self.path, exist_ok=True)
        if not self.overwrite and os.path.exists(os.path.join(self.path, METADATA_FILE)):
            raise ZTensorValueError(f"{self.path} already holds a checkpoint and overwrite=False")
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Assigns each rank its data file, named after this save's id."""
        return [
            dataclasses.replace(
                plan, storage_data=PlanData(f"{self.save_id}-{i:05d}.zt", self.save_id)
            )
            for i, plan in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Writes this rank's items into its `.zt` file (atomically, fsynced).

        Returns:
            A completed future of one `WriteResult` per item.

        Raises:
            ZTensorValueError: The plan was not prepared by this writer, or an
                item's data does not match its plan.
        """
        info = plan.storage_data
        if not isinstance(info, PlanData) or not DATA_FILE.match(info.file):
            raise ZTensorValueError(f"plan storage_data {info!r} was not made by ZtStorageWriter")
        attrs = {"format": DATA_FORMAT, "save_id": info.save_id}
        done: list[tuple[WriteItem, str, int]] = []
        used: set[str] = set()
        path = os.path.join(self.path, info.file)
        with Writer(path, checksum=self.checksum, metadata=attrs) as w:
            for item in plan.items:
                name = _tensor_name(item, used)
                nbytes = self._add_item(w, name, item, planner.resolve_data(item))
                done.append((item, name, nbytes))
            size = w.finalize()
        return _done(
            [
                WriteResult(
                    index=item.index,
                    size_in_bytes=n,
                    storage_data=ItemLocation(info.file, name, size),
                )
                for item, name, n in done
            ]
        )

    def _add_item(self, w: Writer, name: str, item: WriteItem, data: Any) -> int:
        fqn = item.index.fqn
        if item.type == WriteItemType.BYTE_IO:
            raw = data.getbuffer() if isinstance(data, io.BytesIO) else memoryview(data)
            arr = np.frombuffer(raw, dtype=np.uint8)
            w.add_tensor(name, arr, self.compress, metadata={"fqn": fqn, "kind": "bytes"})
            return int(arr.size)
        tensor = data.detach()
        td = item.tensor_data
        if td is not None and tuple(tensor.shape) != tuple(td.chunk.sizes):
            raise ZTensorValueError(
                f"{fqn!r}: resolved data has shape {tuple(tensor.shape)}, "
                f"the plan says {tuple(td.chunk.sizes)}"
            )
        offsets = list(item.index.offset) if item.index.offset is not None else []
        meta = {"fqn": fqn, "kind": "tensor", "offsets": offsets}
        w.add_tensor(name, tensor, self.compress, metadata=meta)
        return int(tensor.numel() * tensor.element_size())

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Writes the metadata file (last, atomically, fsynced), then removes
        data files of earlier saves into this directory.

        Raises:
            CheckpointError: An item of the metadata has no written data.
        """
        storage = {wr.index: wr.storage_data for rank in results for wr in rank}
        metadata = dataclasses.replace(
            metadata, version=metadata.version or DCP_VERSION, storage_meta=self.storage_meta()
        )
        doc = encode(metadata, storage, self.save_id)
        with Writer(os.path.join(self.path, METADATA_FILE), checksum=self.checksum, metadata=doc):
            pass
        keep = {f["name"] for f in doc["files"]}
        for name in os.listdir(self.path):
            stale_data = DATA_FILE.match(name) and name not in keep
            stale_tmp = name.startswith(".") and DATA_FILE.match(name[1:].split(".tmp-")[0])
            if (stale_data or stale_tmp) and not name.lstrip(".").startswith(self.save_id):
                try:
                    os.remove(os.path.join(self.path, name))
                except FileNotFoundError:
                    pass

    def storage_meta(self) -> StorageMeta | None:
        """The checkpoint directory and this save's id."""
        from torch.distributed.checkpoint.metadata import StorageMeta

        return StorageMeta(checkpoint_id=self.path, save_id=self.save_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for a local path (this storage writes local files)."""
        return _local_path(checkpoint_id)


def _tensor_name(item: WriteItem, used: set[str]) -> str:
    """A readable unique name: the fqn, plus the chunk offsets for shards."""
    base = item.index.fqn
    if item.type == WriteItemType.SHARD and item.index.offset is not None:
        base += "@" + ",".join(str(o) for o in item.index.offset)
    name, n = base, 0
    while name in used:
        n += 1
        name = f"{base}~{n}"
    used.add(name)
    return name


class ZtStorageReader(StorageReader):
    """Reads a DCP checkpoint written by `ZtStorageWriter`, on any number
    of ranks, reading only the stored rows each rank needs.

    The metadata file is read and checked when the reader is created (and
    again by `reset`, or when a newer save replaced it), so an incomplete
    or damaged checkpoint fails with a clear error on every rank before
    DCP starts any collective.

    Args:
        path: The checkpoint directory.
        verify: Check every digest of each data file before reading from it
            (reads each file whole once).

    Raises:
        IncompleteCheckpointError: The metadata file is missing.
        CheckpointError: The metadata file is damaged or malformed.
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = False) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.verify = verify
        self.is_coordinator = False
        self.load_id = uuid.uuid4().hex
        self._save_id = ""
        self._stat: tuple[int, int, int] | None = None
        self._metadata: Metadata = self._load_metadata()
        self._chunks: dict[Any, Any] = {}
        self._chunks_of: Metadata | None = None

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint directory."""
        return self.path

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Starts a new load (optionally of another directory) and reads
        its metadata file.

        Raises:
            IncompleteCheckpointError: The metadata file is missing.
            CheckpointError: The metadata file is damaged or malformed.
        """
        if checkpoint_id:
            self.path = os.fspath(checkpoint_id)
        self.load_id = uuid.uuid4().hex
        self._metadata = self._load_metadata()

    def _load_metadata(self) -> Metadata:
        path = os.path.join(self.path, METADATA_FILE)
        stat = self._metadata_stat()
        try:
            with Reader(path) as r:
                if r.format != "zt":
                    raise CheckpointError(f"{path} is a {r.format} file, not a .zt file")
                r.verify()
                doc = r.attributes
        except ZTensorFileNotFoundError as e:
            raise IncompleteCheckpointError(
                f"no complete checkpoint at {self.path}: {METADATA_FILE} is missing "
                "(the save did not finish, or this is not a ztensor DCP checkpoint)"
            ) from e
        except CheckpointError:
            raise
        except ZTensorError as e:
            raise CheckpointError(f"{path}: damaged metadata file: {e}") from e
        metadata, save_id, _ = decode(doc, path)
        self._save_id = save_id
        self._stat = stat
        return metadata

    def _metadata_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(os.path.join(self.path, METADATA_FILE))
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """DCP's global metadata, rebuilt from plain data.

        Raises:
            IncompleteCheckpointError: The metadata file is missing.
            CheckpointError: The metadata file is damaged or malformed.
        """
        if self._metadata_stat() != self._stat:  # a newer save replaced it
            self._metadata = self._load_metadata()
        return self._metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        """Keeps the metadata whose item locations `read_data` follows.

        Raises:
            CheckpointError: The metadata was not read by a ZtStorageReader.
        """
        if not isinstance(metadata.storage_data, dict):
            raise CheckpointError("metadata storage_data was not made by ZtStorageReader")
        self._metadata = metadata
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Returns the plan unchanged."""
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Returns the plans unchanged."""
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Reads each item's region from its data file into the planner's
        tensors (or hands bytes items to `planner.load_bytes`).

        Returns:
            A completed future.

        Raises:
            CheckpointError: A data file is missing, of another save, damaged,
                or does not hold what the metadata says.
        """
        storage: dict[Any, ItemLocation] = self._metadata.storage_data
        by_file: dict[str, list[tuple[ReadItem, ItemLocation]]] = {}
        for item in plan.items:
            loc = storage.get(item.storage_index)
            if not isinstance(loc, ItemLocation):
                raise CheckpointError(f"the metadata has no location for {item.storage_index}")
            by_file.setdefault(loc.file, []).append((item, loc))
        for file, items in by_file.items():
            with self._open_data(file, items[0][1].file_size) as r:
                for item, loc in items:
                    self._read_item(r, file, item, loc, planner)
        return _done(None)

    def _open_data(self, file: str, size: int) -> Reader:
        path = os.path.join(self.path, file)
        try:
            actual = os.path.getsize(path)
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: data file of the checkpoint is missing") from e
        if actual != size:
            raise CheckpointError(f"{path}: {actual} bytes, the metadata says {size}")
        try:
            r = Reader(path)
            attrs = r.attributes
            if not isinstance(attrs, dict) or attrs.get("save_id") != self._save_id:
                raise CheckpointError(f"{path}: not a data file of save {self._save_id}")
            if self.verify:
                r.verify()
        except CheckpointError:
            raise
        except ZTensorError as e:
            raise CheckpointError(f"{path}: damaged data file: {e}") from e
        return r

    def _read_item(
        self, r: Reader, file: str, item: ReadItem, loc: ItemLocation, planner: LoadPlanner
    ) -> None:
        where = f"{os.path.join(self.path, file)}: {loc.tensor!r}"
        if loc.tensor not in r:
            raise CheckpointError(f"{where}: no such tensor in the data file")
        meta = r.metadata(loc.tensor)
        if meta.layout != "dense":
            raise CheckpointError(f"{where}: stored as {meta.layout}, expected dense")
        if item.type == LoadItemType.BYTE_IO:
            if meta.dtype_str != "uint8" or len(meta.shape) != 1:
                raise CheckpointError(f"{where}: bytes items are 1-d uint8 tensors")
            data = r._storage_array(meta, copy=True).tobytes()
            planner.load_bytes(item, io.BytesIO(data))
            return
        chunk = self._chunk_sizes().get(item.storage_index)
        if chunk is not None and tuple(chunk) != meta.shape:
            raise CheckpointError(
                f"{where}: stored shape {meta.shape}, the metadata says {tuple(chunk)}"
            )
        target = planner.resolve_tensor(item).detach()
        src = self._region(r, meta, item, where)
        if src.dtype != target.dtype:
            raise CheckpointError(
                f"{where}: stored as {dtype_name(src.dtype)}, loading into {dtype_name(target.dtype)}"
            )
        if tuple(target.shape) != tuple(src.shape):
            raise CheckpointError(
                f"{where}: region {tuple(src.shape)} does not fit the destination {tuple(target.shape)}"
            )
        target.copy_(src)
        planner.commit_tensor(item, target)

    def _chunk_sizes(self) -> dict[Any, Any]:
        """Each stored chunk's shape per the metadata, by its index."""
        from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata

        if self._chunks_of is not self._metadata:
            self._chunks = {
                MetadataIndex(fqn, c.offsets): c.sizes
                for fqn, md in self._metadata.state_dict_metadata.items()
                if isinstance(md, TensorStorageMetadata)
                for c in md.chunks
            }
            self._chunks_of = self._metadata
        return self._chunks

    def _region(self, r: Reader, meta: TensorMetadata, item: ReadItem, where: str) -> torch.Tensor:
        """The hypercube `storage_offsets`..+`lengths` of a stored chunk,
        reading only the rows it covers."""
        shape = meta.shape
        offsets, lengths = list(item.storage_offsets), list(item.lengths)
        if len(offsets) != len(shape) or len(lengths) != len(shape):
            raise CheckpointError(
                f"{where}: region of rank {len(offsets)} for a stored tensor of shape {shape}"
            )
        for d, (o, n, full) in enumerate(zip(offsets, lengths, shape)):
            if o < 0 or n < 0 or o + n > full:
                raise CheckpointError(
                    f"{where}: region offset {o} + length {n} in dimension {d} "
                    f"passes the stored shape {shape}"
                )
        t = meta._type
        if t is None or t.torch is None:
            raise CheckpointError(f"{where}: element type {meta.dtype_str} has no torch dtype")
        try:
            if not shape:
                return _to_torch(r._storage_array(meta, copy=True), t)
            if meta.encoding == "raw":
                # A read-only view of the mapped file: only the pages of the
                # rows copied below are read, and they are copied once.
                view = r._storage_array(meta, copy=False)[offsets[0] : offsets[0] + lengths[0]]
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*not writable.*")
                    out = _to_torch(view, t)
            else:  # only the zstd frames covering the rows are decoded
                rows = r._native_reader().rows(meta.name, offsets[0], offsets[0] + lengths[0])
                out = _to_torch(rows.view(t.storage).reshape((lengths[0], *shape[1:])), t)
        except ZTensorError as e:
            raise CheckpointError(f"{where}: {e}") from e
        for d in range(1, len(shape)):
            if offsets[d] or lengths[d] != shape[d]:
                out = out.narrow(d, offsets[d], lengths[d])
        return out

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for a local directory holding a ztensor DCP metadata file."""
        return _local_path(checkpoint_id) and os.path.isfile(
            os.path.join(os.fspath(checkpoint_id), METADATA_FILE)
        )
