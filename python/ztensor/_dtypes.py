"""Element types: core names, classic dtype strings, NumPy and PyTorch dtypes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import UnsupportedError, ZTensorValueError


@dataclass(frozen=True)
class ElementType:
    """One element type of the format.

    Attributes:
        core: The core's name (`f32`, `bf16`, `bool`, ...).
        long: The classic dtype string (`float32`, `bfloat16`, ...).
        storage: NumPy dtype of the stored bytes (what a raw view uses).
        ml_dtype: Name of the ml_dtypes type, for types NumPy lacks.
        torch: Name of the torch dtype, or None.
    """

    core: str
    long: str
    storage: np.dtype[Any]
    ml_dtype: str | None = None
    torch: str | None = None


_TYPES = [
    ElementType("f64", "float64", np.dtype("<f8"), torch="float64"),
    ElementType("f32", "float32", np.dtype("<f4"), torch="float32"),
    ElementType("f16", "float16", np.dtype("<f2"), torch="float16"),
    ElementType("bf16", "bfloat16", np.dtype("<u2"), ml_dtype="bfloat16", torch="bfloat16"),
    ElementType("i64", "int64", np.dtype("<i8"), torch="int64"),
    ElementType("i32", "int32", np.dtype("<i4"), torch="int32"),
    ElementType("i16", "int16", np.dtype("<i2"), torch="int16"),
    ElementType("i8", "int8", np.dtype("i1"), torch="int8"),
    ElementType("u64", "uint64", np.dtype("<u8"), torch="uint64"),
    ElementType("u32", "uint32", np.dtype("<u4"), torch="uint32"),
    ElementType("u16", "uint16", np.dtype("<u2"), torch="uint16"),
    ElementType("u8", "uint8", np.dtype("u1"), torch="uint8"),
    ElementType("bool", "bool", np.dtype("u1"), torch="bool"),
    ElementType("complex64", "complex64", np.dtype("<c8"), torch="complex64"),
    ElementType("complex128", "complex128", np.dtype("<c16"), torch="complex128"),
    ElementType("f8_e4m3fn", "float8_e4m3fn", np.dtype("u1"), "float8_e4m3fn", "float8_e4m3fn"),
    ElementType("f8_e5m2", "float8_e5m2", np.dtype("u1"), "float8_e5m2", "float8_e5m2"),
    ElementType(
        "f8_e4m3fnuz",
        "float8_e4m3fnuz",
        np.dtype("u1"),
        "float8_e4m3fnuz",
        "float8_e4m3fnuz",
    ),
    ElementType(
        "f8_e5m2fnuz",
        "float8_e5m2fnuz",
        np.dtype("u1"),
        "float8_e5m2fnuz",
        "float8_e5m2fnuz",
    ),
    ElementType("f8_e8m0", "float8_e8m0fnu", np.dtype("u1"), "float8_e8m0fnu", "float8_e8m0fnu"),
]

BY_CORE = {t.core: t for t in _TYPES}
BY_LONG = {t.long: t for t in _TYPES}


def ml_dtypes_module() -> Any:
    """Imports ml_dtypes or explains how to get it.

    Returns:
        The `ml_dtypes` module.

    Raises:
        UnsupportedError: ml_dtypes is not installed.
    """
    try:
        import ml_dtypes
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedError(
            "bfloat16 and float8 arrays need the ml_dtypes package: pip install ml_dtypes"
        ) from e
    return ml_dtypes


def from_core(core: str) -> ElementType:
    """Looks up a core type name; unknown (e.g. packed f4) types are refused.

    Args:
        core: The format's type name (`'f32'`, `'bf16'`, ...).

    Returns:
        Its element type.

    Raises:
        UnsupportedError: The type has no NumPy equivalent.
    """
    try:
        return BY_CORE[core]
    except KeyError:
        raise UnsupportedError(
            f"element type {core!r} has no NumPy equivalent; read its raw bytes instead"
        ) from None


def numpy_dtype(t: ElementType) -> np.dtype[Any]:
    """The NumPy dtype users see for a type (ml_dtypes for bf16 and fp8).

    Args:
        t: The element type.

    Returns:
        The NumPy dtype.

    Raises:
        UnsupportedError: The type needs ml_dtypes, which is not installed.
    """
    if t.core == "bool":
        return np.dtype(np.bool_)
    if t.ml_dtype is not None:
        return np.dtype(getattr(ml_dtypes_module(), t.ml_dtype))
    return t.storage


def from_numpy(dtype: np.dtype[Any]) -> ElementType:
    """The element type of a NumPy dtype.

    Args:
        dtype: A NumPy dtype.

    Returns:
        Its element type.

    Raises:
        ZTensorValueError: A big-endian or unsupported dtype.
    """
    if dtype == np.bool_:
        return BY_CORE["bool"]
    name = dtype.name
    if name in BY_LONG and BY_LONG[name].ml_dtype is None:
        t = BY_LONG[name]
        if dtype.byteorder == ">":
            raise ZTensorValueError(
                f"big-endian arrays are not supported ({dtype}); use .astype('<...')"
            )
        return t
    for t in _TYPES:
        if t.ml_dtype is not None and name == t.ml_dtype:
            return t
    if name == "float8_e8m0fnu":
        return BY_CORE["f8_e8m0"]
    raise ZTensorValueError(f"unsupported NumPy dtype {dtype}")
