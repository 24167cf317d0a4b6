"""safetensors-style helpers for dicts of NumPy arrays."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from ._errors import ZTensorValueError
from ._reader import Reader
from ._writer import Writer


def save_file(
    tensors: dict[str, np.ndarray],
    filename: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    compress: bool | int = False,
) -> None:
    """Saves a dict of arrays to `filename` (atomically).

    Args:
        tensors: Name → array.
        filename: Target path.
        metadata: File-level metadata.
        compress: False, True (zstd level 3) or a level 1-22.

    Raises:
        ZTensorValueError: An unsupported dtype or compression level.
        ZTensorError: The file cannot be written.
    """
    with Writer(filename, metadata=metadata) as w:
        for name, arr in tensors.items():
            w.add_tensor(name, arr, compress=compress)


def load_file(
    filename: str | os.PathLike[str], copy: bool = False, threads: int | None = None
) -> dict[str, Any]:
    """Loads every tensor of a file.

    Args:
        filename: Path of the file.
        copy: Return writable copies instead of read-only zero-copy views.
            Copies of dense tensors are read by several threads issuing
            large `pread`s straight into the new arrays (fast on a cold
            page cache), and their digests are checked.
        threads: Reader threads for `copy` (default 8: the reads are
            I/O-bound).

    Returns:
        Name → array; sparse tensors as scipy sparse matrices. Without
        `copy` the views are read-only, so names whose bytes are stored once
        cannot change each other.

    Raises:
        ZTensorFileNotFoundError: The file does not exist.
        FormatError: The file is not valid.
        ChecksumError: With `copy`, a tensor's digest does not match.
        ValueError: `threads` is not a positive int.
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ZTensorValueError(f"threads must be a positive int or None, got {threads!r}")
    with Reader(filename) as r:
        if not copy:
            return {name: r.read_tensor(name) for name in r.tensor_names}
        dense = [n for n in r.tensor_names if r.metadata(n).layout == "dense"]
        loaded = r._dense_copies(dense, threads)
        return {
            name: loaded[name] if name in loaded else r.read_tensor(name, copy=True)
            for name in r.tensor_names
        }


def save(tensors: dict[str, np.ndarray], metadata: dict[str, Any] | None = None) -> bytes:
    """Serialises a dict of arrays to the bytes of a `.zt` file.

    Args:
        tensors: Name → array.
        metadata: File-level metadata.

    Returns:
        The file's bytes.

    Raises:
        ZTensorValueError: An unsupported dtype.
    """
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tensors.zt")
        with Writer(path, metadata=metadata, durable=False) as w:
            for name, arr in tensors.items():
                w.add_tensor(name, arr)
        with open(path, "rb") as f:
            return f.read()


def load(data: bytes) -> dict[str, Any]:
    """Loads every tensor from the bytes of a `.zt` file.

    Args:
        data: The file's bytes.

    Returns:
        Name → array (read-only views of the bytes).

    Raises:
        FormatError: The bytes are not a valid file.
    """
    with Reader.from_bytes(data) as r:
        return {name: r.read_tensor(name) for name in r.tensor_names}
