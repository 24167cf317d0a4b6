"""safetensors-style helpers for PyTorch: save/load dicts and models."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _dtypes
from .._errors import ZTensorValueError
from .._reader import Reader, TensorMetadata
from .._writer import Writer

if TYPE_CHECKING:
    import torch


def _torch() -> Any:
    import torch

    return torch


def _numpy_from_torch(tensor: torch.Tensor) -> tuple[np.ndarray, _dtypes.ElementType]:
    """A contiguous CPU copy-free (when possible) NumPy view of a tensor."""
    torch = _torch()
    if tensor.layout != torch.strided:
        raise ZTensorValueError("sparse torch tensors: use add_sparse_csr / add_sparse_coo")
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    name = str(t.dtype).removeprefix("torch.")
    for et in _dtypes.BY_CORE.values():
        if et.torch == name:
            break
    else:
        raise ZTensorValueError(f"unsupported torch dtype {t.dtype}")
    if et.core == "bool":
        return t.view(torch.uint8).numpy(), et
    if et.storage.itemsize == 2 and et.core in ("bf16",):
        return t.view(torch.int16).numpy().view(np.uint16), et
    if et.ml_dtype is not None:  # fp8: stored as bytes
        return t.view(torch.uint8).numpy(), et
    return t.numpy(), et


def _to_torch(arr: np.ndarray, t: _dtypes.ElementType) -> torch.Tensor:
    """A torch tensor over a writable NumPy array of storage dtype."""
    torch = _torch()
    target = getattr(torch, t.torch) if t.torch else None
    if target is None:
        raise ZTensorValueError(f"torch has no dtype for {t.long}")
    if t.core == "bf16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    if t.core == "bool":
        return torch.from_numpy(arr.view(np.uint8)).view(torch.bool)
    if t.ml_dtype is not None:
        return torch.from_numpy(arr.view(np.uint8)).view(target)
    return torch.from_numpy(arr)


def _tensor_from_reader(reader: Reader, meta: TensorMetadata, device: str = "cpu") -> torch.Tensor:
    torch = _torch()
    t = reader._typed(meta)
    native = reader._native_reader()
    if meta.layout == "sparse_csr":
        values, indices, indptr = native.csr(meta.name)
        out = torch.sparse_csr_tensor(
            torch.from_numpy(indptr.astype(np.int64)),
            torch.from_numpy(indices.astype(np.int64)),
            _to_torch(values.view(t.storage), t),
            size=meta.shape,
        )
    elif meta.layout == "sparse_coo":
        values, coords = native.coo(meta.name)
        out = torch.sparse_coo_tensor(
            torch.from_numpy(coords.astype(np.int64)),
            _to_torch(values.view(t.storage), t),
            size=meta.shape,
        ).coalesce()
    else:
        out = _to_torch(reader._storage_array(meta, copy=True), t)
    return out.to(device) if str(device) != "cpu" else out


def _storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    return (
        t.device,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


def _write(w: Writer, tensors: dict[str, torch.Tensor], force_contiguous: bool = True) -> None:
    """Adds tensors; exact views of the same storage are stored once."""
    first: dict[tuple[Any, ...], str] = {}
    for name, tensor in tensors.items():
        if not force_contiguous and not tensor.is_contiguous():
            raise ZTensorValueError(f"{name!r} is not contiguous; pass force_contiguous=True")
        key = _storage_key(tensor)
        if key in first:
            w.add_alias(name, first[key])
            continue
        first[key] = name
        w.add_tensor(name, tensor)


def _metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    return dict(metadata) if metadata is not None else None


def save_file(
    tensors: dict[str, torch.Tensor],
    filename: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
) -> None:
    """Saves a dict of tensors to `filename` (atomically).

    Tensors that are the same view of the same storage are stored once and
    declared aliases, so they load back tied.

    Args:
        tensors: Name → tensor (any device; sparse tensors are refused).
        filename: Target path.
        metadata: File-level metadata (a JSON-like dict).

    Raises:
        ZTensorValueError: A tensor is sparse or has an unsupported dtype.
        ZTensorError: The file cannot be written.
    """
    with Writer(filename, metadata=_metadata(metadata)) as w:
        _write(w, tensors)


def load_file(
    filename: str | os.PathLike[str], device: str | Any = "cpu"
) -> dict[str, torch.Tensor]:
    """Loads every tensor of a file onto `device`.

    Raw dense tensors on the CPU map the file copy-on-write (no copy until
    written). Names the file declares as aliases (tied weights, same dtype
    and shape) come back as one tensor object; every other name gets its
    own dtype, shape and memory, even when canonical dedup stored its bytes
    once.

    Args:
        filename: Path of a `.zt` (or other readable) file.
        device: Target device, e.g. `"cpu"` or `"cuda:0"`.

    Returns:
        Name → tensor (sparse layouts as torch sparse tensors).

    Raises:
        ZTensorFileNotFoundError: The file does not exist.
        FormatError: The file is not valid.
    """
    with Reader(filename) as r:
        return _load_all(r, device)


def _mapped_storage(r: Reader) -> Any:
    """The whole file as a private (copy-on-write) mapped torch storage, or
    None for readers not opened from a file."""
    if r._path == "<bytes>" or not os.path.isfile(r._path):
        return None
    torch = _torch()
    return torch.UntypedStorage.from_file(
        r._path, shared=False, nbytes=r._native_reader().file_len()
    )


def _mapped_tensor(r: Reader, meta: TensorMetadata, storage: Any) -> torch.Tensor | None:
    """A tensor over the mapped file for raw dense parts (no copy: pages are
    read on first touch and copied only if written), else None."""
    t = meta._type
    info = r._native_reader().object(meta.name)["parts"]["data"]
    if storage is None or t is None or t.torch is None or info["encoding"] or info["shard"]:
        return None
    r._native_reader().dense(meta.name)  # checks the data rules (bool bytes, ...)
    torch = _torch()
    dtype = getattr(torch, t.torch)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if meta.offset % itemsize or info["length"] % itemsize:
        return None
    numel = info["length"] // itemsize
    flat = torch.empty(0, dtype=dtype)
    flat.set_(storage, meta.offset // itemsize, (numel,))
    return flat.view(meta.shape)


def _load_all(r: Reader, device: str | Any) -> dict[str, torch.Tensor]:
    """Every tensor of `r`. Only names the file declares as aliases of
    another (same dtype, shape and blobs) share that tensor; any other
    names whose blobs coincide (canonical dedup of equal bytes) get their
    own dtype, shape and memory."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    mapped_blobs: set[tuple[int, int]] = set()
    storage = _mapped_storage(r)
    for meta in r.tensors:
        if meta.alias_of is not None:
            aliases[meta.name] = meta.alias_of
            continue
        mapped = _mapped_tensor(r, meta, storage) if meta.layout == "dense" else None
        if mapped is None:
            tensor = _tensor_from_reader(r, meta, str(device))
        else:
            blob = (meta.offset, meta.size)
            if blob in mapped_blobs and meta.size > 0:
                mapped = mapped.clone()  # the mapping's pages already belong to another name
            mapped_blobs.add(blob)
            tensor = mapped if str(device) == "cpu" else mapped.to(device)
        out[meta.name] = tensor
    for name, target in aliases.items():
        root = target
        for _ in range(len(aliases)):  # a hostile file may chain or loop aliases
            if root not in aliases:
                break
            root = aliases[root]
        if root in out:
            out[name] = out[root]
        else:
            out[name] = _tensor_from_reader(r, r.metadata(name), str(device))
    return out


def save(tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> bytes:
    """Serialises a dict of tensors to the bytes of a `.zt` file.

    Args:
        tensors: Name → tensor.
        metadata: File-level metadata (a JSON-like dict).

    Returns:
        The file's bytes.

    Raises:
        ZTensorValueError: A tensor is sparse or has an unsupported dtype.
    """
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tensors.zt")
        with Writer(path, metadata=_metadata(metadata), durable=False) as w:
            _write(w, tensors)
        with open(path, "rb") as f:
            return f.read()


def load(data: bytes, device: str | Any = "cpu") -> dict[str, torch.Tensor]:
    """Loads every tensor from the bytes of a `.zt` file.

    Args:
        data: The file's bytes.
        device: Target device.

    Returns:
        Name → tensor; declared aliases share one tensor, as in `load_file`.

    Raises:
        FormatError: The bytes are not a valid file.
    """
    with Reader.from_bytes(data) as r:
        return _load_all(r, device)


def save_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    force_contiguous: bool = True,
) -> None:
    """Saves a model's state dict. Shared (tied) parameters are stored once,
    under every name, declared as aliases, and come back tied.

    Args:
        model: The module to save.
        filename: Target path.
        metadata: File-level metadata (a JSON-like dict).
        force_contiguous: Store non-contiguous tensors as contiguous copies;
            if False they are refused.

    Raises:
        ZTensorValueError: A tensor is not contiguous (and
            `force_contiguous` is False) or has an unsupported dtype.
    """
    state = model.state_dict(keep_vars=False)
    tensors = {}
    for name, t in state.items():
        tensors[name] = t if force_contiguous or t.is_contiguous() else t.contiguous()
    with Writer(filename, metadata=_metadata(metadata)) as w:
        _write(w, tensors, force_contiguous)


def load_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    strict: bool = True,
    device: str | Any = "cpu",
) -> tuple[list[str], list[str]]:
    """Loads weights into `model`.

    Args:
        model: The module to fill (its parameters are copied into).
        filename: Path of the file.
        strict: Raise when the file's names and the model's differ.
        device: Device to load the tensors onto before copying.

    Returns:
        (missing, unexpected): names the model has that the file lacks, and
        names the file has that the model lacks.

    Raises:
        RuntimeError: `strict` and the names differ.
        FormatError: The file is not valid.
    """
    state = load_file(filename, device=device)
    model_keys = set(model.state_dict().keys())
    missing = sorted(model_keys - set(state))
    unexpected = sorted(set(state) - model_keys)
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(model).__name__}: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    model.load_state_dict(state, strict=False)
    return missing, unexpected
