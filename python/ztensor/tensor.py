"""`Tensor`, `TensorMeta` and `DType`: one named tensor held in memory.

A `Tensor` owns its bytes (an immutable `bytes` object, little-endian,
C order) with a shape, an element type and an optional name. It converts
to and from NumPy (copies both ways; `tobytes()` hands out the stored bytes
without a copy) and goes into and out of `.zt` files with
`Writer.add_tensor(tensor)` and `Reader.tensor(name)`.

Example:
    >>> import numpy as np
    >>> import ztensor
    >>> t = ztensor.Tensor.from_numpy(np.ones((2, 3), np.float32), name="w")
    >>> t.shape, t.dtype, t.size_bytes
    ([2, 3], DType.float32, 24)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _dtypes
from ._errors import ZTensorValueError

# Element types that are integers, and of those the unsigned ones.
_INTEGER = {"i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"}
_UNSIGNED = {"u8", "u16", "u32", "u64", "bool", "f8_e8m0"}
_COMPLEX = {"complex64", "complex128"}


class DType:
    """An element type: `DType.float32()`, `DType.bfloat16()`, ...

    Every element type of the format has a constructor named after its
    classic dtype string (`float8_e4m3fn()`, `complex64()`, ...); `bool_()`
    is the boolean type. Two `DType` objects are equal when they name the
    same type.
    """

    __slots__ = ("_t",)

    def __init__(self, name: str) -> None:
        """A type by name: a classic string (`'float32'`), a core name
        (`'f32'`) or a NumPy dtype name.

        Args:
            name: The type's name.

        Raises:
            ValueError: `name` is not a string, or no element type has that
                name (also a `ZTensorValueError`).
        """
        if not isinstance(name, str):
            raise ZTensorValueError(
                f"DType name must be a string such as 'float32', not {type(name).__name__}"
            )
        t = _dtypes.BY_LONG.get(name) or _dtypes.BY_CORE.get(name)
        if t is None and name in ("bool_", "float8_e8m0"):
            t = _dtypes.BY_CORE["bool" if name == "bool_" else "f8_e8m0"]
        if t is None:
            raise ZTensorValueError(
                f"dtype {name!r} is not an element type; known: {', '.join(_dtypes.BY_LONG)}"
            )
        self._t: _dtypes.ElementType = t

    @classmethod
    def float64(cls) -> DType:
        """64-bit IEEE float.

        Returns:
            The type.
        """
        return cls("float64")

    @classmethod
    def float32(cls) -> DType:
        """32-bit IEEE float.

        Returns:
            The type.
        """
        return cls("float32")

    @classmethod
    def float16(cls) -> DType:
        """16-bit IEEE float.

        Returns:
            The type.
        """
        return cls("float16")

    @classmethod
    def bfloat16(cls) -> DType:
        """Brain float (8-bit exponent, 7-bit mantissa); NumPy arrays use ml_dtypes.

        Returns:
            The type.
        """
        return cls("bfloat16")

    @classmethod
    def float8_e4m3fn(cls) -> DType:
        """8-bit float, 4-bit exponent, finite (OCP FP8 E4M3).

        Returns:
            The type.
        """
        return cls("float8_e4m3fn")

    @classmethod
    def float8_e5m2(cls) -> DType:
        """8-bit float, 5-bit exponent (OCP FP8 E5M2).

        Returns:
            The type.
        """
        return cls("float8_e5m2")

    @classmethod
    def float8_e4m3fnuz(cls) -> DType:
        """8-bit float, 4-bit exponent, finite, unsigned zero.

        Returns:
            The type.
        """
        return cls("float8_e4m3fnuz")

    @classmethod
    def float8_e5m2fnuz(cls) -> DType:
        """8-bit float, 5-bit exponent, finite, unsigned zero.

        Returns:
            The type.
        """
        return cls("float8_e5m2fnuz")

    @classmethod
    def float8_e8m0fnu(cls) -> DType:
        """8-bit exponent-only scale type (MX formats).

        Returns:
            The type.
        """
        return cls("float8_e8m0fnu")

    @classmethod
    def complex64(cls) -> DType:
        """Complex of two float32.

        Returns:
            The type.
        """
        return cls("complex64")

    @classmethod
    def complex128(cls) -> DType:
        """Complex of two float64.

        Returns:
            The type.
        """
        return cls("complex128")

    @classmethod
    def int8(cls) -> DType:
        """8-bit signed integer.

        Returns:
            The type.
        """
        return cls("int8")

    @classmethod
    def int16(cls) -> DType:
        """16-bit signed integer.

        Returns:
            The type.
        """
        return cls("int16")

    @classmethod
    def int32(cls) -> DType:
        """32-bit signed integer.

        Returns:
            The type.
        """
        return cls("int32")

    @classmethod
    def int64(cls) -> DType:
        """64-bit signed integer.

        Returns:
            The type.
        """
        return cls("int64")

    @classmethod
    def uint8(cls) -> DType:
        """8-bit unsigned integer.

        Returns:
            The type.
        """
        return cls("uint8")

    @classmethod
    def uint16(cls) -> DType:
        """16-bit unsigned integer.

        Returns:
            The type.
        """
        return cls("uint16")

    @classmethod
    def uint32(cls) -> DType:
        """32-bit unsigned integer.

        Returns:
            The type.
        """
        return cls("uint32")

    @classmethod
    def uint64(cls) -> DType:
        """64-bit unsigned integer.

        Returns:
            The type.
        """
        return cls("uint64")

    @classmethod
    def bool_(cls) -> DType:
        """Boolean, one byte per element (0 or 1).

        Returns:
            The type.
        """
        return cls("bool")

    @classmethod
    def all(cls) -> list[DType]:
        """Every element type with a NumPy equivalent.

        Returns:
            One `DType` per type.
        """
        return [cls(name) for name in _dtypes.BY_LONG]

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        """The element type of a NumPy dtype (ml_dtypes types included).

        Args:
            dtype: A NumPy dtype or anything `np.dtype()` accepts.

        Returns:
            The type.

        Raises:
            ValueError: `np.dtype()` does not accept `dtype`, or the dtype has
                no element type (also a `ZTensorValueError`).
        """
        try:
            d = np.dtype(dtype)
        except (TypeError, ValueError) as e:
            raise ZTensorValueError(f"dtype {dtype!r:.80} is not a NumPy dtype: {e}") from None
        t = _dtypes.from_numpy(d.newbyteorder("<") if d.byteorder == ">" else d)
        return cls(t.long)

    @property
    def name(self) -> str:
        """The classic dtype string, e.g. `'float32'`."""
        return self._t.long

    @property
    def core_name(self) -> str:
        """The format's type name, e.g. `'f32'`."""
        return self._t.core

    @property
    def element_size(self) -> int:
        """Bytes per element."""
        return self._t.storage.itemsize

    def to_numpy(self) -> np.dtype[Any]:
        """The NumPy dtype of values of this type.

        Returns:
            The dtype (an ml_dtypes type for bfloat16 and float8).

        Raises:
            UnsupportedError: The type needs ml_dtypes, which is missing.
        """
        return _dtypes.numpy_dtype(self._t)

    def is_float(self) -> bool:
        """Whether this is a real floating-point type (incl. bf16 and fp8).

        Returns:
            True for float types; False for integers, bool and complex.
        """
        return self._t.core not in _INTEGER | _COMPLEX | {"bool"}

    def is_complex(self) -> bool:
        """Whether this is a complex type.

        Returns:
            True for complex64 and complex128.
        """
        return self._t.core in _COMPLEX

    def is_integer(self) -> bool:
        """Whether this is an integer type (bool is not).

        Returns:
            True for int8..uint64.
        """
        return self._t.core in _INTEGER

    def is_signed(self) -> bool:
        """Whether values can be negative.

        Returns:
            True for signed integers, floats and complex types.
        """
        return self._t.core not in _UNSIGNED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DType) and other._t.core == self._t.core

    def __hash__(self) -> int:
        return hash(("ztensor.DType", self._t.core))

    def __repr__(self) -> str:
        return f"DType.{self._t.long}"


# The element count a tensor can have (the format stores counts as i64).
_MAX_ELEMENTS = 2**63 - 1


def _check_shape(shape: Iterable[int], what: str = "shape") -> list[int]:
    """Dimensions as a list of non-negative ints."""
    if isinstance(shape, (str, bytes)):
        raise ZTensorValueError(f"{what} must be a sequence of integers, not {shape!r}")
    try:
        dims = list(shape)
    except TypeError:
        raise ZTensorValueError(
            f"{what} must be a sequence of integers, not {type(shape).__name__}"
        ) from None
    out = []
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise ZTensorValueError(f"{what}[{i}] = {d!r} is not an integer")
        if d < 0:
            raise ZTensorValueError(f"{what}[{i}] = {d} is negative")
        out.append(int(d))
    count = 1
    for d in out:
        count *= d
    if count > _MAX_ELEMENTS:
        raise ZTensorValueError(
            f"{what} {out} has {count} elements; at most {_MAX_ELEMENTS} (2**63 - 1) fit a tensor"
        )
    return out


def _check_dtype(dtype: Any) -> DType:
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str):
        return DType(dtype)
    raise ZTensorValueError(f"dtype must be a ztensor.DType or a name, not {type(dtype).__name__}")


def _check_name(name: Any) -> str | None:
    if name is None or isinstance(name, str):
        return name
    raise ZTensorValueError(f"name must be a string or None, not {type(name).__name__}")


class TensorMeta:
    """A tensor's shape, element type and name, without its data.

    Args:
        shape: Dimensions (non-negative integers).
        dtype: The element type (a `DType` or its name).
        name: The tensor's name, or None.

    Raises:
        ValueError: A dimension is negative or not an integer, or the dtype
            is unknown (also a `ZTensorValueError`).
    """

    __slots__ = ("_shape", "_dtype", "_name")

    def __init__(self, shape: Iterable[int], dtype: DType | str, name: str | None = None) -> None:
        self._shape = _check_shape(shape)
        self._dtype = _check_dtype(dtype)
        self._name: str | None = _check_name(name)

    @property
    def name(self) -> str | None:
        """The tensor's name, or None (settable; a string or None)."""
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = _check_name(value)

    @property
    def shape(self) -> list[int]:
        """Dimensions (a copy)."""
        return list(self._shape)

    @property
    def dtype(self) -> DType:
        """The element type."""
        return self._dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    @property
    def num_elements(self) -> int:
        """Product of the dimensions (1 for a scalar)."""
        return math.prod(self._shape)

    @property
    def size_bytes(self) -> int:
        """Bytes of the data: elements × element size."""
        return self.num_elements * self._dtype.element_size

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TensorMeta)
            and other._shape == self._shape
            and other._dtype == self._dtype
            and other.name == self.name
        )

    def __hash__(self) -> int:
        return hash((tuple(self._shape), self._dtype, self.name))

    def __repr__(self) -> str:
        return f"TensorMeta(shape={self._shape}, dtype={self._dtype!r}, name={self.name!r})"


class Tensor:
    """A named tensor in memory: little-endian C-order bytes, shape and type.

    Build one with `from_numpy`, `zeros` or `from_bytes`.
    """

    __slots__ = ("_meta", "_data")

    def __init__(self, meta: TensorMeta, data: bytes | bytearray | memoryview) -> None:
        """Wraps bytes that already match `meta` (use the constructors).

        Args:
            meta: Shape, type and name.
            data: Exactly `meta.size_bytes` bytes (bytes, bytearray or
                memoryview; copied).

        Raises:
            ValueError: `meta` is not a `TensorMeta`, `data` is not bytes, or
                the byte count does not match (also a `ZTensorValueError`).
        """
        if not isinstance(meta, TensorMeta):
            raise ZTensorValueError(f"meta must be a ztensor.TensorMeta, not {type(meta).__name__}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ZTensorValueError(
                f"data must be bytes, bytearray or memoryview, not {type(data).__name__}"
            )
        if isinstance(data, memoryview):
            data = data.tobytes()
        if len(data) != meta.size_bytes:
            raise ZTensorValueError(
                f"data has {len(data)} bytes; shape {meta.shape} of {meta.dtype.name} "
                f"needs {meta.size_bytes}"
            )
        # Our own copy: renaming the caller's `meta` later must not rename us.
        self._meta = TensorMeta(meta.shape, meta.dtype, meta.name)
        self._data = bytes(data)

    @classmethod
    def from_numpy(cls, array: Any, name: str | None = None) -> Tensor:
        """A tensor holding a copy of a NumPy array.

        Args:
            array: Any array NumPy accepts, of a supported dtype (bool,
                integers, floats, complex, ml_dtypes bfloat16/float8).
                Big-endian arrays are converted to little-endian.
            name: The tensor's name.

        Returns:
            The tensor.

        Raises:
            ValueError: The dtype is not supported (also a `ZTensorValueError`).
        """
        arr = np.asarray(array)
        dtype = DType.from_numpy(arr.dtype)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        meta = TensorMeta(arr.shape, dtype, name=_check_name(name))
        return cls(meta, np.ascontiguousarray(arr).tobytes())

    @classmethod
    def zeros(cls, shape: Iterable[int], dtype: DType | str, name: str | None = None) -> Tensor:
        """A tensor of zeros (all-zero bytes: 0, 0.0, False).

        Args:
            shape: Dimensions.
            dtype: The element type.
            name: The tensor's name.

        Returns:
            The tensor.

        Raises:
            ValueError: A bad dimension or dtype (also a `ZTensorValueError`).
            MemoryError: The tensor's bytes cannot be allocated.
        """
        meta = TensorMeta(shape, dtype, name=name)
        try:
            data = bytes(meta.size_bytes)
        except (MemoryError, OverflowError):
            raise MemoryError(
                f"zeros of shape {meta.shape} ({meta.dtype}) need {meta.size_bytes} bytes"
            ) from None
        return cls(meta, data)

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        shape: Iterable[int],
        dtype: DType | str,
        name: str | None = None,
    ) -> Tensor:
        """A tensor from raw little-endian C-order bytes (copied).

        Args:
            data: The bytes; their count must equal elements × element size.
            shape: Dimensions.
            dtype: The element type.
            name: The tensor's name.

        Returns:
            The tensor.

        Raises:
            ValueError: A bad dimension or dtype, or a byte count that does not
                match the shape (also a `ZTensorValueError`).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ZTensorValueError(
                f"data must be bytes, bytearray or memoryview, not {type(data).__name__}"
            )
        raw = bytes(data) if not isinstance(data, memoryview) else data.tobytes()
        return cls(TensorMeta(shape, dtype, name=name), raw)

    @property
    def meta(self) -> TensorMeta:
        """Shape, type and name (a new object)."""
        return TensorMeta(self._meta.shape, self._meta.dtype, self._meta.name)

    @property
    def name(self) -> str | None:
        """The tensor's name, or None."""
        return self._meta.name

    @name.setter
    def name(self, value: str | None) -> None:
        self._meta.name = _check_name(value)

    @property
    def shape(self) -> list[int]:
        """Dimensions (a copy)."""
        return self._meta.shape

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._meta.ndim

    @property
    def num_elements(self) -> int:
        """Number of elements."""
        return self._meta.num_elements

    @property
    def dtype(self) -> DType:
        """The element type."""
        return self._meta.dtype

    @property
    def size_bytes(self) -> int:
        """Bytes of the data."""
        return len(self._data)

    def to_numpy(self) -> np.ndarray:
        """A writable copy of the data as a NumPy array.

        Returns:
            The array (ml_dtypes dtype for bfloat16 and float8).

        Raises:
            UnsupportedError: bfloat16/float8 without ml_dtypes installed.
        """
        arr = np.frombuffer(self._data, dtype=self._meta.dtype._t.storage)
        out = arr.reshape(self._meta.shape).copy()
        t = self._meta.dtype._t
        if t.core == "bool":
            return out.view(np.bool_)
        if t.ml_dtype is not None:
            return out.view(_dtypes.numpy_dtype(t))
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.to_numpy()
        return arr if dtype is None else arr.astype(dtype)

    def tobytes(self) -> bytes:
        """The stored bytes (little-endian, C order), without a copy.

        Returns:
            The bytes (immutable).
        """
        return self._data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tensor) and other._meta == self._meta and other._data == self._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        m = self._meta
        return f"Tensor(name={m.name!r}, shape={m.shape}, dtype={m.dtype!r})"
