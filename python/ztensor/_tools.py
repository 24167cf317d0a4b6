"""Whole-file operations: open any supported format, convert to `.zt`,
export to GGUF or safetensors."""

from __future__ import annotations

import os
from typing import Any

from . import _native
from ._reader import Reader

PathLike = str | os.PathLike[str]


def open(path: PathLike, *, backend: str = "mmap") -> Reader:  # noqa: A001 - ztensor.open
    """Opens a `.zt`, GGUF, safetensors, npy, npz or legacy ztensor file.

    The format is detected from the file's first bytes, never its name.
    Files of other formats are read-only and use the same interface as
    `.zt` files: zero-copy arrays, row slices, metadata and attributes.
    """
    return Reader(path, backend=backend)


def convert(
    src: PathLike,
    dst: PathLike,
    *,
    compress: bool | int | None = None,
    checksum: str | None = "xxh3",
    align: int = 4096,
) -> dict[str, Any]:
    """Converts any readable file into a `.zt` file, atomically.

    GGUF metadata becomes file attributes with each value's exact GGUF type
    and the key and tensor order recorded (so `export` rebuilds the file bit
    for bit); quantized tensors keep their block bytes verbatim. Tensor data
    is streamed, so memory stays flat whatever the input size.

    Args:
        src: Input file (format detected from its content).
        dst: Output `.zt` path.
        compress: zstd level 1-22, True for level 3, None/False/0 for raw.
        checksum: Digest per part: xxh3, crc32c, blake3, sha256 or None.
        align: Blob alignment, a power of two >= 4096.

    Returns:
        A report: format, tensors, quantized, metadata_keys, input_bytes,
        output_bytes.
    """
    level = 3 if compress is True else (int(compress) if compress else None)
    return _native.convert(os.fspath(src), os.fspath(dst), level, checksum or "none", align)


def export(src: PathLike, dst: PathLike) -> dict[str, int]:
    """Writes `src` as GGUF or safetensors, chosen by `dst`'s extension.

    A `.zt` converted from GGUF exports to a file identical to the original.
    Returns tensors, metadata_keys, skipped_attributes and bytes.
    """
    return _native.export(os.fspath(src), os.fspath(dst))
