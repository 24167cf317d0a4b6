"""Read and write `.zt` tensor files (ztensor container v2) from Python.

Example:
    >>> import numpy as np
    >>> from ztensor import Reader, Writer
    >>> with Writer("model.zt") as w:
    ...     w.add_tensor("weights", np.ones((2, 2), dtype=np.float32))
    >>> with Reader("model.zt") as r:
    ...     r["weights"].sum()
    4.0
"""

from __future__ import annotations

from ._errors import (
    ChecksumError,
    FingerprintMismatchError,
    FormatError,
    LimitError,
    SnapshotError,
    UnsupportedError,
    ZTensorError,
    ZTensorFileNotFoundError,
    ZTensorIOError,
    ZTensorKeyError,
    ZTensorValueError,
)
from ._native import __version__
from ._reader import Reader, TensorMetadata
from ._tools import convert, export, open
from ._writer import Writer
from .engine import Token, TokenBatch
from .tensor import DType, Tensor, TensorMeta

__all__ = [
    "ChecksumError",
    "DType",
    "FingerprintMismatchError",
    "FormatError",
    "LimitError",
    "SnapshotError",
    "Reader",
    "Tensor",
    "TensorMeta",
    "TensorMetadata",
    "Token",
    "TokenBatch",
    "UnsupportedError",
    "Writer",
    "ZTensorError",
    "ZTensorFileNotFoundError",
    "ZTensorIOError",
    "ZTensorKeyError",
    "ZTensorValueError",
    "__version__",
    "convert",
    "export",
    "open",
]
