"""safetensors-style helpers for dicts of NumPy arrays."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

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
    """
    with Writer(filename, metadata=metadata) as w:
        for name, arr in tensors.items():
            w.add_tensor(name, arr, compress=compress)


def load_file(filename: str | os.PathLike[str], copy: bool = False) -> dict[str, Any]:
    """Loads every tensor: read-only zero-copy views unless `copy`.

    Sparse tensors come back as scipy sparse matrices.
    """
    with Reader(filename) as r:
        return {name: r.read_tensor(name, copy=copy) for name in r.tensor_names}


def save(tensors: dict[str, np.ndarray], metadata: dict[str, Any] | None = None) -> bytes:
    """Serialises a dict of arrays to the bytes of a `.zt` file."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tensors.zt")
        with Writer(path, metadata=metadata, durable=False) as w:
            for name, arr in tensors.items():
                w.add_tensor(name, arr)
        with open(path, "rb") as f:
            return f.read()


def load(data: bytes) -> dict[str, Any]:
    """Loads every tensor from the bytes of a `.zt` file."""
    with Reader.from_bytes(data) as r:
        return {name: r.read_tensor(name) for name in r.tensor_names}
