"""Type stubs for the native module (the Rust core's Python surface)."""

import os
from typing import Any, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "NativeEngine",
    "NativeReader",
    "NativeWriter",
    "PartBuffer",
    "__version__",
    "convert",
    "dequantize",
    "export",
]

__version__: str

@final
class PartBuffer:
    """A read-only byte buffer over a mapped part; keeps the file mapped."""

    def __len__(self) -> int: ...

@final
class NativeReader:
    def __new__(cls, path: str, backend: str = "mmap") -> NativeReader: ...
    @staticmethod
    def from_bytes(data: bytes) -> NativeReader: ...
    def names(self) -> list[str]: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: str, /) -> bool: ...
    def file_len(self) -> int: ...
    def format(self) -> str: ...
    def object(self, name: str) -> dict[str, Any]: ...
    def attributes(self) -> Any: ...
    def dense(self, name: str, copy: bool = False) -> PartBuffer | npt.NDArray[np.uint8]: ...
    def part(self, name: str, role: str) -> npt.NDArray[np.uint8]: ...
    def stored(self, name: str, role: str) -> npt.NDArray[np.uint8]: ...
    def rows(self, name: str, start: int, end: int) -> npt.NDArray[np.uint8]: ...
    def csr(
        self, name: str
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...
    def coo(self, name: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64]]: ...
    def verify(self) -> dict[str, int]: ...

@final
class NativeWriter:
    def __new__(
        cls,
        path: str,
        align: int = 4096,
        append: bool = False,
        canonical: bool = False,
        durable: bool = True,
    ) -> NativeWriter: ...
    def __contains__(self, key: str, /) -> bool: ...
    def add(
        self,
        name: str,
        data: npt.NDArray[np.uint8],
        shape: list[int],
        dtype: str,
        compress: int | None = None,
        checksum: str = "xxh3",
        attributes: Any = None,
    ) -> None: ...
    def add_csr(
        self,
        name: str,
        shape: tuple[int, int],
        values: npt.NDArray[np.uint8],
        dtype: str,
        indices: npt.NDArray[np.uint64],
        indptr: npt.NDArray[np.uint64],
        compress: int | None = None,
        checksum: str = "xxh3",
    ) -> None: ...
    def add_coo(
        self,
        name: str,
        shape: list[int],
        values: npt.NDArray[np.uint8],
        dtype: str,
        coords: npt.NDArray[np.uint64],
        compress: int | None = None,
        checksum: str = "xxh3",
    ) -> None: ...
    def add_alias(self, name: str, target: str) -> None: ...
    def set_attributes(self, attributes: Any) -> None: ...
    def finish(self) -> int: ...
    def abandon(self) -> None: ...

def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    compress: int | None = None,
    checksum: str = "xxh3",
    align: int = 4096,
) -> dict[str, Any]: ...
def export(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> dict[str, int]: ...
@final
class NativeEngine:
    def __new__(
        cls,
        path: str | os.PathLike[str],
        n_ctx: int = 0,
        n_threads: int = 0,
        kv_dtype: str = "f16",
        seed: int = 0,
    ) -> NativeEngine: ...
    def info(self) -> dict[str, Any]: ...
    def tokenize(
        self, text: str, add_bos: bool | None = None, parse_special: bool = True
    ) -> list[int]: ...
    def detokenize(self, ids: list[int]) -> str: ...
    def token_text(self, id: int) -> str: ...
    def tokens(self) -> list[int]: ...
    def eval(self, tokens: list[int], all_logits: bool = True) -> npt.NDArray[np.float32]: ...
    def reset(self) -> None: ...
    def start(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        frequency_penalty: float,
        presence_penalty: float,
        penalty_last_n: int,
        stop: list[str],
        seed: int | None,
    ) -> None: ...
    def next_token(self) -> tuple[int, str, int, float, bool] | None: ...
    def generated_text(self) -> str: ...

def dequantize(
    layout: str, dtype: str, data: npt.NDArray[np.uint8], n: int
) -> npt.NDArray[np.float32]: ...
