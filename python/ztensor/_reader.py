"""`Reader` and `TensorMetadata`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Literal, cast

import numpy as np

from . import _dtypes
from ._errors import UnsupportedError, ZTensorKeyError, ZTensorValueError
from ._native import NativeReader
from .tensor import DType, Tensor

# URLs the core reads itself with range requests (object_store); any other
# `scheme://` goes through fsspec.
_NATIVE_SCHEMES = ("http://", "https://", "s3://", "s3a://")

_LAYOUTS = {
    "dense": "dense",
    "zt.sparse_csr/1": "sparse_csr",
    "zt.sparse_coo/1": "sparse_coo",
}
_MAIN_PART = {"dense": "data", "sparse_csr": "values", "sparse_coo": "values"}


# GGUF block types `ztensor.engine.dequantize` decodes (the engine's own).
_DEQUANTIZABLE = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"}


_READ_TENSOR = "read_tensor reads dense and sparse tensors"


def _not_dense(meta: TensorMetadata, reader: str) -> str:
    """Why a read cannot decode a tensor of this layout, and what can.

    Args:
        meta: The tensor.
        reader: What the refused read reads (`'Reader.tensor reads dense
            tensors'`).

    Returns:
        The message.
    """
    layout = meta.layout
    if layout.startswith("gguf.") and layout.endswith("/1"):
        block = layout[len("gguf.") : -len("/1")]
        advice = (
            f"ztensor.engine.dequantize(reader, {meta.name!r}) decodes them to float32"
            if block in _DEQUANTIZABLE
            else f"ztensor has no decoder for {block} blocks (it decodes "
            f"{', '.join(sorted(_DEQUANTIZABLE))})"
        )
        return (
            f"{meta.name!r} holds GGUF {block} quantized blocks (layout {layout!r}), which "
            f"have no element type; {reader}: {advice}"
        )
    return f"{meta.name!r} has layout {layout!r}; {reader}"


class TensorMetadata:
    """Metadata about one tensor of a file.

    Attributes:
        name: Tensor name.
        shape: Tensor dimensions.
        dtype_str: Element type as a string (`'float32'`, `'bfloat16'`, ...).
        layout: `'dense'`, `'sparse_csr'`, `'sparse_coo'`, or the profile id.
        encoding: `'raw'`, `'zstd'`, or None when there is no main part.
        offset: Byte offset of the main part in the file.
        size: Stored bytes of all parts (compressed size when compressed).
        endianness: Always `'little'` (the format is little-endian).
        checksum: The main part's digest string, if any.
        attributes: The tensor's attributes (metadata), if any.
        alias_of: The tensor this one is a declared alias of (tied
            weights: same dtype, shape and stored bytes), or None. Tensors
            that merely share stored bytes (canonical dedup) are not aliases.
    """

    __slots__ = (
        "name",
        "shape",
        "dtype_str",
        "layout",
        "encoding",
        "offset",
        "size",
        "endianness",
        "checksum",
        "attributes",
        "alias_of",
        "_type",
    )

    def __init__(self, name: str, info: dict[str, Any]) -> None:
        self.name = name
        self.shape: tuple[int, ...] = tuple(info["shape"])
        self.layout: str = _LAYOUTS.get(info["layout"], info["layout"])
        parts: dict[str, dict[str, Any]] = info["parts"]
        main = parts.get(_MAIN_PART.get(self.layout, "data")) or next(iter(parts.values()))
        core = main["type"] or main["dtype"]
        self._type = _dtypes.BY_CORE.get(core)
        self.dtype_str: str = self._type.long if self._type else core
        encoding = main["encoding"]
        self.encoding: str | None = {None: "raw", "zt.zstd-seekable/1": "zstd"}.get(
            encoding, encoding
        )
        self.offset: int = main["offset"]
        self.size: int = sum(p["length"] for p in parts.values())
        self.endianness: str | None = "little"
        self.checksum: str | None = main["digest"]
        self.attributes: Any = info["attributes"]
        self.alias_of: str | None = info.get("alias_of")

    @property
    def dtype(self) -> np.dtype[Any]:
        """The NumPy dtype of the values (ml_dtypes types for bf16/fp8).

        Raises:
            UnsupportedError: The element type has no NumPy dtype.
        """
        if self._type is None:
            raise UnsupportedError(
                f"{self.name!r}: element type {self.dtype_str!r} has no NumPy dtype"
            )
        return _dtypes.numpy_dtype(self._type)

    def __repr__(self) -> str:
        return f"<TensorMetadata name={self.name!r} shape={self.shape} dtype={self.dtype_str!r}>"


class _RowSlice:
    """Lazy row slicing of a dense tensor: `reader.get_slice(name)[a:b]`."""

    def __init__(self, reader: Reader, meta: TensorMetadata) -> None:
        self._reader = reader
        self._meta = meta

    @property
    def shape(self) -> tuple[int, ...]:
        return self._meta.shape

    def __getitem__(self, key: slice | int) -> np.ndarray:
        if not self._meta.shape:
            raise ZTensorValueError("a scalar has no rows to slice")
        rows = self._meta.shape[0]
        if isinstance(key, int):
            index = key + rows if key < 0 else key
            if not 0 <= index < rows:
                raise IndexError(f"row {key} out of range for {rows} rows")
            return self[index : index + 1][0]
        start, stop, step = key.indices(rows)
        if step != 1:
            return self[start:stop][::step]
        stop = max(stop, start)
        t = self._meta._type
        if t is None:
            raise UnsupportedError(f"{self._meta.name!r}: cannot decode {self._meta.dtype_str!r}")
        raw = self._reader._native_reader().rows(self._meta.name, start, stop)
        arr = raw.view(t.storage).reshape((stop - start, *self._meta.shape[1:]))
        return _as_user_dtype(arr, t)


def _as_user_dtype(arr: np.ndarray, t: _dtypes.ElementType) -> np.ndarray:
    if t.core == "bool":
        return arr.view(np.bool_)
    if t.ml_dtype is not None:
        return arr.view(_dtypes.numpy_dtype(t))
    return arr


class Reader:
    """Opens a `.zt` file for reading.

    Dense raw tensors come back as read-only NumPy views over the file's
    memory map (no copy; the array keeps the map alive, even after the
    reader is closed). Compressed tensors are decoded in parallel into an
    owned array. Every structural rule of the format is checked at open.

    Remote files open the same way: an `http://`, `https://` or `s3://`
    URL is read with HTTP range requests (S3 credentials, region and
    endpoint from the usual `AWS_*` environment variables, overridden by
    `storage_options` such as `{"endpoint_url": ..., "region": ...}`);
    any other `protocol://` URL, or any path with `filesystem=`, is read
    through fsspec. Opening costs a few requests (size, head and tail,
    and the manifest if the tail did not hold it); each read fetches only
    the byte ranges (for compressed tensors, the frames) that cover it.

    Args:
        file_path: Path of the file, or a URL.
        backend: `'mmap'` (default) or `'pread'` for local files that may
            change while open.
        storage_options: Settings of a remote store: for http(s)/s3 URLs
            the object_store options (`endpoint_url`, `region`,
            `access_key_id`, `secret_access_key`, `allow_http`, ...); for
            fsspec URLs the keyword arguments of the fsspec file system.
        filesystem: An fsspec file system to read `file_path` from.

    Raises:
        ZTensorFileNotFoundError: The file does not exist.
        ZTensorIOError: A remote request failed, or a server answered with
            a body of the wrong length.
        FormatError: The file is not a valid `.zt` file (or GGUF,
            safetensors, npy, npz or legacy ztensor file; those open
            read-only through the same interface).
    """

    def __init__(
        self,
        file_path: str | os.PathLike[str],
        *,
        backend: str = "mmap",
        storage_options: dict[str, Any] | None = None,
        filesystem: Any = None,
    ) -> None:
        self._path = os.fspath(file_path)
        self._native: NativeReader | None = None
        if filesystem is not None:
            self._native = NativeReader.open_fsspec(filesystem, self._path)
        elif self._path.startswith(_NATIVE_SCHEMES):
            options = [(k, _option_text(v)) for k, v in (storage_options or {}).items()]
            self._native = NativeReader.open_url(self._path, options)
        elif "://" in self._path:
            import fsspec  # type: ignore[import-untyped]  # only fsspec URLs need it

            fs, path = fsspec.core.url_to_fs(self._path, **(storage_options or {}))
            self._native = NativeReader.open_fsspec(fs, path)
        else:
            self._native = NativeReader(self._path, backend)

    @classmethod
    def from_bytes(cls, data: bytes) -> Reader:
        """Opens a file held in memory.

        Args:
            data: The file's bytes (copied once).

        Returns:
            A reader over the bytes.

        Raises:
            FormatError: The bytes are not a valid file.
        """
        self = cls.__new__(cls)
        self._native = NativeReader.from_bytes(bytes(data))
        self._path = "<bytes>"
        return self

    def _native_reader(self) -> NativeReader:
        if self._native is None:
            raise ZTensorValueError("this reader is closed")
        return self._native

    def close(self) -> None:
        """Releases the reader; arrays already returned stay valid."""
        self._native = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._native_reader())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._native_reader()

    def __iter__(self) -> Iterator[TensorMetadata]:
        return iter(self.tensors)

    def __getitem__(self, key: str | int) -> Any:
        """By name: the tensor's data (NumPy). By index: its TensorMetadata."""
        if isinstance(key, int):
            names = self.tensor_names
            return self.metadata(names[key])
        return self.read_tensor(key)

    def __repr__(self) -> str:
        return f"<ztensor.Reader {self._path!r} tensors={len(self) if self._native else 'closed'}>"

    @property
    def tensor_names(self) -> list[str]:
        """All tensor names, sorted."""
        return self._native_reader().names()

    @property
    def tensors(self) -> list[TensorMetadata]:
        """Metadata of every tensor."""
        return [self.metadata(n) for n in self.tensor_names]

    @property
    def format(self) -> str:
        """The format the file was read as, detected from its first bytes:
        `zt`, `gguf`, `safetensors`, `npy`, `npz`, `ztensor-1` or `ztensor-0.1`."""
        return self._native_reader().format()

    @property
    def attributes(self) -> Any:
        """File-level metadata (any JSON-like value), or None."""
        return self._native_reader().attributes()

    def keys(self) -> list[str]:
        """Tensor names (like a dict).

        Returns:
            All tensor names, sorted.
        """
        return self.tensor_names

    def metadata(self, name: str) -> TensorMetadata:
        """Metadata of one tensor.

        Args:
            name: Tensor name.

        Returns:
            Its `TensorMetadata`.

        Raises:
            ZTensorKeyError: No tensor has that name (also a KeyError).
        """
        native = self._native_reader()
        if name not in native:
            raise ZTensorKeyError(f"no tensor named {name!r}")
        return TensorMetadata(name, native.object(name))

    def read_tensor(
        self, name: str, to: Literal["numpy", "torch"] = "numpy", *, copy: bool = False
    ) -> Any:
        """Reads one tensor.

        Args:
            name: Tensor name.
            to: `'numpy'` (NumPy array, or scipy sparse matrix for sparse
                tensors) or `'torch'` (torch tensor, or torch sparse tensor).
            copy: Return a writable copy instead of a read-only view. A
                dense copy is read by several threads with large `pread`s
                and its digest is checked.

        Returns:
            The tensor in the requested framework.

        Raises:
            ZTensorKeyError: No tensor has that name.
            ChecksumError: With `copy`, the tensor's digest does not match.
            ZTensorValueError: `to` is neither `'numpy'` nor `'torch'`.
            UnsupportedError: The element type or layout cannot be decoded
                (quantized GGUF blocks: `ztensor.engine.dequantize` decodes
                them to float32).
            FormatError: The stored data breaks a rule of its layout.
        """
        meta = self.metadata(name)
        if to == "torch":
            from .torch import _tensor_from_reader

            return _tensor_from_reader(self, meta)
        if to != "numpy":
            raise ZTensorValueError(f"to must be 'numpy' or 'torch', not {to!r}")
        if meta.layout == "sparse_csr":
            return self._scipy_csr(meta)
        if meta.layout == "sparse_coo":
            return self._scipy_coo(meta)
        return self._dense(meta, copy=copy)

    def tensor(self, name: str) -> Tensor:
        """Reads one dense tensor as a `ztensor.Tensor` (a copy of its bytes).

        Args:
            name: Tensor name.

        Returns:
            The tensor, named `name`.

        Raises:
            ZTensorKeyError: No tensor has that name.
            ZTensorValueError: The tensor is sparse (`read_tensor` reads it).
            UnsupportedError: The tensor holds quantized blocks (a GGUF
                `gguf.<type>/1` layout: `ztensor.engine.dequantize` decodes
                them to float32) or another layout or element type that has
                no `DType`.
            FormatError: The stored data breaks a rule of its layout.
        """
        meta = self.metadata(name)
        if meta.layout in ("sparse_csr", "sparse_coo"):
            raise ZTensorValueError(
                f"{name!r} is a sparse tensor ({meta.layout}); Reader.tensor reads dense "
                "tensors: read it with read_tensor (a scipy or torch sparse tensor)"
            )
        if meta.layout != "dense":
            raise UnsupportedError(_not_dense(meta, "Reader.tensor reads dense tensors"))
        raw = self._storage_array(meta, copy=True)
        t = self._typed(meta)
        return Tensor.from_bytes(raw.tobytes(), list(meta.shape), DType(t.long), name=name)

    def get_slice(self, name: str) -> _RowSlice:
        """A lazy view: `get_slice(name)[a:b]` reads only rows a..b (only the
        zstd frames covering them, when compressed).

        Args:
            name: Name of a dense tensor.

        Returns:
            A sliceable view; indexing it returns NumPy arrays.

        Raises:
            ZTensorKeyError: No tensor has that name.
            ZTensorValueError: The tensor is not dense.
        """
        meta = self.metadata(name)
        if meta.layout != "dense":
            raise ZTensorValueError(f"{name!r} is {meta.layout}; only dense tensors slice by rows")
        return _RowSlice(self, meta)

    def verify(self) -> dict[str, int]:
        """Checks every digest, zstd frame and data rule of the file.

        Returns:
            Counts of what was checked (e.g. parts, digests, bytes).

        Raises:
            ChecksumError: A digest or zstd checksum does not match.
            FormatError: A data rule is broken.
        """
        return self._native_reader().verify()

    # -- internals ---------------------------------------------------------

    def _typed(self, meta: TensorMetadata) -> _dtypes.ElementType:
        if meta._type is None:
            raise UnsupportedError(
                f"{meta.name!r}: element type {meta.dtype_str!r} cannot be decoded to NumPy"
            )
        return meta._type

    def _storage_array(self, meta: TensorMetadata, copy: bool) -> np.ndarray:
        """A dense tensor as its storage dtype (uint16 for bf16, uint8 for bool)."""
        if meta.layout != "dense":
            raise UnsupportedError(_not_dense(meta, _READ_TENSOR))
        t = self._typed(meta)
        data = self._native_reader().dense(meta.name, copy)
        arr = (
            data.view(t.storage)
            if isinstance(data, np.ndarray)
            else np.frombuffer(cast(bytes, data), t.storage)
        )
        return arr.reshape(meta.shape)

    def _dense_copies(self, names: list[str], threads: int | None = None) -> dict[str, np.ndarray]:
        """Writable copies of dense tensors, read in parallel (large `pread`s
        by several threads) with data rules and digests checked."""
        metas = [self.metadata(n) for n in names]
        for meta in metas:
            if meta.layout != "dense":
                raise UnsupportedError(_not_dense(meta, _READ_TENSOR))
            self._typed(meta)
        raw = self._native_reader().dense_many(names, threads)
        out: dict[str, np.ndarray] = {}
        for meta, data in zip(metas, raw):
            t = self._typed(meta)
            out[meta.name] = _as_user_dtype(data.view(t.storage).reshape(meta.shape), t)
        return out

    def _dense(self, meta: TensorMetadata, copy: bool) -> np.ndarray:
        if meta.layout != "dense":
            raise UnsupportedError(_not_dense(meta, _READ_TENSOR))
        t = self._typed(meta)
        return _as_user_dtype(self._storage_array(meta, copy), t)

    def _values(self, meta: TensorMetadata, raw: np.ndarray) -> np.ndarray:
        return _as_user_dtype(raw.view(self._typed(meta).storage), self._typed(meta))

    def _scipy_values(self, meta: TensorMetadata, raw: np.ndarray) -> np.ndarray:
        t = self._typed(meta)
        if t.ml_dtype is not None:
            raise UnsupportedError(
                f"{meta.name!r}: scipy.sparse has no {t.long} type; "
                "read it with to='torch', or store float32 values"
            )
        return self._values(meta, raw)

    def _scipy_csr(self, meta: TensorMetadata) -> Any:
        import scipy.sparse

        values, indices, indptr = self._native_reader().csr(meta.name)
        return scipy.sparse.csr_matrix(
            (
                self._scipy_values(meta, values),
                indices.astype(np.int64),
                indptr.astype(np.int64),
            ),
            shape=meta.shape,
        )

    def _scipy_coo(self, meta: TensorMetadata) -> Any:
        import scipy.sparse

        values, coords = self._native_reader().coo(meta.name)
        vals = self._scipy_values(meta, values)
        coords = coords.astype(np.int64)
        if len(meta.shape) == 2:
            return scipy.sparse.coo_matrix((vals, (coords[0], coords[1])), shape=meta.shape)
        return scipy.sparse.coo_array((vals, tuple(coords)), shape=meta.shape)


def _option_text(value: object) -> str:
    """A storage option as object_store takes it (`true`/`false` for bools)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
