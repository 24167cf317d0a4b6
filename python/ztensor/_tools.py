"""Whole-file operations: open any supported format, convert to `.zt`,
export to GGUF or safetensors."""

from __future__ import annotations

import os
from typing import Any, Union

from . import _native
from ._reader import Reader

# typing.Union, not `str | ...`: this alias is evaluated at import time and
# the package supports Python 3.9.
PathLike = Union[str, "os.PathLike[str]"]


def open(  # noqa: A001 - ztensor.open
    path: PathLike,
    *,
    backend: str = "mmap",
    storage_options: dict[str, Any] | None = None,
    filesystem: Any = None,
) -> Reader:
    """Opens a `.zt`, GGUF, safetensors, npy, npz or legacy ztensor file.

    The format is detected from the file's first bytes, never its name.
    Files of other formats are read-only and use the same interface as
    `.zt` files: zero-copy arrays, row slices, metadata and attributes.

    Remote files open by URL: `http(s)://` and `s3://` with range requests
    (S3 settings from the `AWS_*` environment, overridden by
    `storage_options`), any other `protocol://` through fsspec; see
    `Reader`.

    Args:
        path: The file, or a URL.
        backend: `'mmap'` (default) or `'pread'` (local files).
        storage_options: Settings of the remote store (see `Reader`).
        filesystem: An fsspec file system to read `path` from.

    Returns:
        A `Reader`.

    Raises:
        ZTensorFileNotFoundError: The file does not exist.
        ZTensorIOError: A remote request failed or returned a wrong length.
        FormatError: The file is not valid in its detected format.
    """
    return Reader(path, backend=backend, storage_options=storage_options, filesystem=filesystem)


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

    Raises:
        FormatError: The input is not valid.
        ZTensorError: A name or value the `.zt` writer refuses, or an I/O
            error; no output file is left.
    """
    level = 3 if compress is True else (int(compress) if compress else None)
    return _native.convert(os.fspath(src), os.fspath(dst), level, checksum or "none", align)


def export(src: PathLike, dst: PathLike, max_shard_size: int | None = None) -> dict[str, int]:
    """Writes `src` as GGUF or safetensors, chosen by `dst`'s extension.

    With `max_shard_size`, a GGUF export is a split set in llama.cpp's
    convention: `<stem>-00001-of-0000N.gguf`, ... next to `dst`, each with
    the `split.no`, `split.count` and `split.tensors.count` keys, all other
    metadata in the first, tensors never cut (a tensor larger than the
    limit gets a file of its own).

    A `.zt` converted from GGUF exports to a file identical to the original.
    Every limit the target's readers enforce (GGUF tensor names of at most
    63 bytes, 4 dimensions, whole quantization blocks per row, the alignment
    key; safetensors' reserved `__metadata__` name, whole bytes, header size)
    is checked before the output file is created.

    Args:
        src: Input file.
        dst: Output path ending in `.gguf` or `.safetensors`.
        max_shard_size: Most bytes a file of a split GGUF set holds
            (at least 65536); None writes one file.

    Returns:
        A report: tensors, metadata_keys, skipped_attributes, bytes (over
        all files) and files (how many were written).

    Raises:
        UnsupportedError: Something the target format cannot hold; no output
            file is created.
        ZTensorValueError: `dst` has neither extension, or `max_shard_size`
            is below the minimum or given for a safetensors export.
    """
    return _native.export(os.fspath(src), os.fspath(dst), max_shard_size)
