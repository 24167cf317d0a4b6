"""`Writer`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import _dtypes
from ._errors import ZTensorValueError
from ._native import NativeWriter
from .tensor import Tensor

_DEFAULT = object()


def _level(compress: bool | int) -> int | None:
    if compress is True:
        return 3
    if compress is False or compress == 0:
        return None
    if isinstance(compress, int) and 1 <= compress <= 22:
        return int(compress)
    raise ZTensorValueError(f"compress must be False, True or a level 1-22, not {compress!r}")


def _to_numpy(tensor: Any) -> tuple[np.ndarray, _dtypes.ElementType]:
    """A C-contiguous little-endian array and its element type."""
    if type(tensor).__module__.startswith("torch"):
        from .torch import _numpy_from_torch

        return _numpy_from_torch(tensor)
    arr = np.asarray(tensor)
    t = _dtypes.from_numpy(arr.dtype)
    return _c_order(arr), t


def _c_order(arr: np.ndarray) -> np.ndarray:
    # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _bytes_of(arr: np.ndarray) -> np.ndarray:
    return _c_order(arr).reshape(-1).view(np.uint8)


def _index_array(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise ZTensorValueError(f"{what} must be integers, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ZTensorValueError(f"{what} must not be negative")
    return np.ascontiguousarray(arr.astype(np.uint64, copy=False)).reshape(-1)


class Writer:
    """Writes a `.zt` file.

    The file appears at `file_path` only when the writer finishes (on
    leaving the `with` block or calling `finalize()`): bytes go to a
    temporary file that is synced and renamed into place. If the block
    raises, nothing is written and an existing file is left untouched.

    Args:
        file_path: Where to write.
        append: Add tensors to an existing file (atomically) instead of
            replacing it.
        align: Blob alignment in bytes, a power of two ≥ 4096.
        canonical: Write canonical form (64 KiB placement, names in sorted
            order, identical tensors stored once, reproducible bytes).
        checksum: Default digest per tensor: `'xxh3'`, `'crc32c'`,
            `'blake3'`, `'sha256'` or None.
        metadata: File-level metadata (any JSON-like value in a dict).
        durable: fsync before returning from `finalize()`.
    """

    def __init__(
        self,
        file_path: str | os.PathLike[str],
        *,
        append: bool = False,
        align: int = 4096,
        canonical: bool = False,
        checksum: str | None = "xxh3",
        metadata: dict[str, Any] | None = None,
        durable: bool = True,
    ) -> None:
        self._native: NativeWriter | None = NativeWriter(
            os.fspath(file_path), align, append, canonical, durable
        )
        self._checksum = checksum
        if metadata is not None:
            self._native.set_attributes(metadata)

    def _w(self) -> NativeWriter:
        if self._native is None:
            raise ZTensorValueError("this writer is already finalized")
        return self._native

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._native is None:
            return
        if exc_type is not None:
            self.abandon()
        else:
            self.finalize()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._w()

    def _checksum_of(self, checksum: Any) -> str:
        chosen = self._checksum if checksum is _DEFAULT else checksum
        return "none" if chosen is None else str(chosen)

    def add_tensor(
        self,
        name: str | Tensor,
        tensor: Any = None,
        compress: bool | int = False,
        *,
        checksum: Any = _DEFAULT,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Adds a NumPy array, torch tensor or `ztensor.Tensor`.

        `add_tensor(t)` with a named `ztensor.Tensor` stores it under its
        own name; `add_tensor(name, t)` under `name`.

        Args:
            name: Unique tensor name, or a named `ztensor.Tensor`.
            tensor: The data (any supported dtype, incl. bool and bf16);
                omitted when `name` is a `ztensor.Tensor`.
            compress: False/0 (raw), True (zstd level 3) or a level 1-22.
            checksum: Digest for this tensor (default: the writer's).
            metadata: Tensor-level metadata (a dict).

        Raises:
            ZTensorValueError: Duplicate name, unsupported dtype, no data,
                or a `ztensor.Tensor` without a name.
        """
        if isinstance(name, Tensor):
            if tensor is not None:
                raise ZTensorValueError(
                    "add_tensor(tensor) takes the name from the Tensor; "
                    "use add_tensor(name, tensor) to give another name"
                )
            if name.name is None:
                raise ZTensorValueError("the Tensor has no name; use add_tensor(name, tensor)")
            name, tensor = name.name, name
        if tensor is None:
            raise ZTensorValueError(f"add_tensor({name!r}): no tensor data given")
        if isinstance(tensor, Tensor):
            data = np.frombuffer(tensor.tobytes(), dtype=np.uint8)
            shape, core = tensor.shape, tensor.dtype.core_name
        else:
            arr, t = _to_numpy(tensor)
            data, shape, core = _bytes_of(arr), list(arr.shape), t.core
        self._w().add(
            name,
            data,
            shape,
            core,
            _level(compress),
            self._checksum_of(checksum),
            metadata,
        )

    def add_sparse_csr(
        self,
        name: str,
        values: Any,
        indices: Any,
        indptr: Any,
        shape: tuple[int, int] | list[int],
        compress: bool | int = False,
        *,
        checksum: Any = _DEFAULT,
    ) -> None:
        """Adds a CSR matrix from its `data`, `indices` and `indptr` arrays.

        Args:
            name: Unique tensor name.
            values: The non-zero values.
            indices: Column index of each value (sorted within a row).
            indptr: Row start offsets into `values` (`rows + 1` entries).
            shape: `(rows, cols)`.
            compress: False/0 (raw), True (zstd level 3) or a level 1-22.
            checksum: Digest for this tensor (default: the writer's).

        Raises:
            ZTensorValueError: Negative or non-integer indices, a duplicate name,
                an unsupported dtype, or indices that break the CSR rules.
        """
        vals, t = _to_numpy(values)
        rows, cols = (int(d) for d in shape)
        self._w().add_csr(
            name,
            (rows, cols),
            _bytes_of(vals),
            t.core,
            _index_array(indices, "indices"),
            _index_array(indptr, "indptr"),
            _level(compress),
            self._checksum_of(checksum),
        )

    def add_sparse_coo(
        self,
        name: str,
        values: Any,
        indices: Any,
        shape: tuple[int, ...] | list[int],
        compress: bool | int = False,
        *,
        checksum: Any = _DEFAULT,
    ) -> None:
        """Adds a COO tensor.

        Args:
            name: Unique tensor name.
            values: The non-zero values.
            indices: Coordinates, shape `(ndim, nnz)`.
            shape: The tensor's dimensions.
            compress: False/0 (raw), True (zstd level 3) or a level 1-22.
            checksum: Digest for this tensor (default: the writer's).

        Raises:
            ZTensorValueError: `indices` is not `(ndim, nnz)`, a coordinate is
                out of range or repeated, a duplicate name or unsupported dtype.
        """
        vals, t = _to_numpy(values)
        idx = np.asarray(indices)
        dims = [int(d) for d in shape]
        if idx.ndim != 2 or idx.shape[0] != len(dims):
            raise ZTensorValueError(f"indices must have shape (ndim, nnz) = ({len(dims)}, nnz)")
        self._w().add_coo(
            name,
            dims,
            _bytes_of(vals),
            t.core,
            _index_array(idx, "indices"),
            _level(compress),
            self._checksum_of(checksum),
        )

    def add_alias(self, name: str, target: str) -> None:
        """Stores `name` as another name of `target`'s data (tied weights).

        The file declares the alias, so loaders (`ztensor.torch`) return one
        shared tensor for both names.

        Args:
            name: The new, unique name.
            target: An existing tensor of this writer.

        Raises:
            ZTensorKeyError: `target` was not added.
            ZTensorValueError: `name` is taken or not a valid name.
        """
        self._w().add_alias(name, target)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Sets the file-level metadata.

        Args:
            metadata: A JSON-like dict (text keys).

        Raises:
            ZTensorValueError: A key is not valid text or values nest too deeply.
        """
        self._w().set_attributes(metadata)

    def finalize(self) -> int:
        """Writes the index and moves the file into place.

        Returns:
            The file's size in bytes.

        Raises:
            ZTensorValueError: The writer is already finalized.
            ZTensorError: The file cannot be written.
        """
        native = self._w()
        self._native = None
        return native.finish()

    def abandon(self) -> None:
        """Discards everything written; the target is left as it was."""
        if self._native is not None:
            self._native.abandon()
            self._native = None
