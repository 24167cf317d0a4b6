"""A CPU inference engine for Llama / Mistral / Qwen2 models stored in `.zt`
(converted from GGUF with `ztensor.convert`) or read straight from GGUF.

Example:
    >>> from ztensor.engine import Engine
    >>> e = Engine("model.zt", n_ctx=512, seed=1)        # doctest: +SKIP
    >>> e.generate("Once upon a time", max_tokens=32)     # doctest: +SKIP
    >>> for tok in e.stream(" and then", max_tokens=8):   # doctest: +SKIP
    ...     print(tok.text, end="", flush=True)

Weights stay memory-mapped; quantized blocks (q4_0 ... q8_0, q2_k ... q6_k)
are computed from their stored bytes. Every computing call releases the
GIL; generation runs token by token, so Ctrl-C stops it between tokens
and leaves the engine usable.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from ._errors import ZTensorKeyError
from ._native import NativeEngine
from ._native import dequantize as _dequantize
from ._reader import Reader

__all__ = [
    "AsyncEngine",
    "Engine",
    "SnapshotInfo",
    "StateInfo",
    "Token",
    "TokenBatch",
    "dequantize",
]

_R = TypeVar("_R")


class _hybridmethod(Generic[_R]):
    """A method that works on the class (building a new engine) and on an
    instance (acting on that engine): `Engine.restore(path)` and
    `engine.restore(path)`."""

    def __init__(self, func: Callable[..., _R]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, cls: type) -> Callable[..., _R]:
        target = obj if obj is not None else cls

        def bound(*args: Any, **kwargs: Any) -> _R:
            return self.func(target, *args, **kwargs)

        bound.__doc__ = self.func.__doc__
        return bound


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot file says about itself (read without the model)."""

    arch_id: str
    model_path: str | None
    model_fingerprint: str
    tokenizer_digest: str
    max_context_length: int
    num_threads: int
    version: int
    magic: str
    tokens_count: int
    n_layer: int
    kv_dim: int
    kv_dtype: str
    n_vocab: int
    created: int


@dataclass(frozen=True)
class StateInfo:
    """A stored state: its size, when it was taken and how its text ends."""

    name: str
    tokens_count: int
    created: datetime.datetime
    text_tail: str


def dequantize(reader: Reader, name: str) -> npt.NDArray[np.float32]:
    """A weight as float32 in its logical shape: dense f32/f16/bf16, or the
    ggml blocks of a `gguf.<type>/1` object (q4_0 ... q8_0, q2_k ... q6_k),
    decoded with the engine's own kernels."""
    meta = reader.metadata(name)
    obj = reader._native_reader().object(name)
    part = obj["parts"]["data"]
    data = reader._native_reader().part(name, "data")
    n = int(np.prod(meta.shape, dtype=np.int64)) if meta.shape else 1
    out = _dequantize(obj["layout"], part["dtype"], data, n)
    return out.reshape(tuple(meta.shape))


@dataclass
class Token:
    """One token of a generation."""

    id: int
    position: int = 0
    text: str = ""
    logprob: float = 0.0
    is_special: bool = False
    eos: bool = False

    @classmethod
    def with_text(cls, id: int, text: str, position: int, logprob: float = 0.0) -> Token:
        """A token from its id, text and position."""
        return cls(id=id, position=position, text=text, logprob=logprob)

    def prob(self) -> float:
        """The probability the model gave this token (exp of `logprob`)."""
        return math.exp(self.logprob)

    def is_eos(self) -> bool:
        """True for the model's end-of-sequence token."""
        return self.eos

    def to_dict(self) -> dict[str, Any]:
        """The token's fields as a dict."""
        return {
            "id": self.id,
            "position": self.position,
            "text": self.text,
            "logprob": self.logprob,
            "is_special": self.is_special,
        }

    def encode(self) -> bytes:
        """The token as UTF-8 JSON."""
        return json.dumps(self.to_dict()).encode()


@dataclass
class TokenBatch:
    """Tokens of one sequence, streamed together."""

    sequence_id: int = 0
    tokens: list[Token] = field(default_factory=list)
    is_final: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_tokens(cls, tokens: list[Token], sequence_id: int = 0) -> TokenBatch:
        return cls(sequence_id=sequence_id, tokens=list(tokens))

    def add(self, token: Token) -> None:
        self.tokens.append(token)

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[Token]:
        return iter(self.tokens)

    def is_empty(self) -> bool:
        return not self.tokens

    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    def token_ids(self) -> list[int]:
        return [t.id for t in self.tokens]

    def positions(self) -> list[int]:
        return [t.position for t in self.tokens]

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value

    def get_metadata(self, key: str) -> str | None:
        return self.metadata.get(key)


class Engine:
    """A model with its context (tokens, KV cache, sampler RNG).

    Args:
        path: A `.zt` or GGUF model file.
        n_ctx: Context length (0: the model's training context, at most 4096).
        n_threads: Worker threads (0: all cores).
        kv_dtype: KV cache element type, `"f16"` (default) or `"f32"`.
        seed: Seed of the sampler's RNG (xoshiro256**).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int = 0,
        n_threads: int = 0,
        kv_dtype: str = "f16",
        seed: int = 0,
    ) -> None:
        self._native = NativeEngine(os.fspath(path), n_ctx, n_threads, kv_dtype, seed)
        self._info: dict[str, Any] = self._native.info()
        self.path = os.fspath(path)

    @classmethod
    def _from_native(cls, native: NativeEngine, path: str) -> Engine:
        e = cls.__new__(cls)
        e._native = native
        e._info = native.info()
        e.path = path
        return e

    # --- snapshots -------------------------------------------------------

    def snapshot(self, path: str | os.PathLike[str], *, compress: bool = False) -> None:
        """Saves the context (used KV rows, tokens, last logits, sampler
        settings, live RNG) to a `.zt` file, atomically. `compress` stores
        the parts zstd-compressed."""
        self._native.snapshot(os.fspath(path), compress)

    def snapshot_bytes(self, *, compress: bool = False) -> bytes:
        """The snapshot as bytes."""
        return self._native.snapshot_bytes(compress)

    @_hybridmethod
    def restore(
        target: Any,
        path: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_threads: int = 0,
    ) -> Engine:
        """On an engine: replaces its context with the snapshot's, after
        checking the model fingerprint, tokenizer, shapes, token ids and
        digests (on failure `SnapshotError` is raised and the engine is
        unchanged); returns the engine. On the class: builds a new engine
        from the model at `model_path` (default: the path the snapshot
        records) with the snapshot's context length and KV type."""
        if isinstance(target, Engine):
            target._native.restore_path(os.fspath(path))
            return target
        native = NativeEngine.from_snapshot(
            os.fspath(path), None if model_path is None else os.fspath(model_path), n_threads
        )
        return target._from_native(native, native.model_path())

    @_hybridmethod
    def restore_bytes(
        target: Any,
        blob: bytes,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_threads: int = 0,
    ) -> Engine:
        """`restore` from bytes held in memory (no temporary file). On the
        class, `model_path` names the model to load."""
        if isinstance(target, Engine):
            target._native.restore_bytes(bytes(blob))
            return target
        if model_path is None:
            raise TypeError("Engine.restore_bytes needs model_path=")
        native = NativeEngine.from_snapshot(bytes(blob), os.fspath(model_path), n_threads)
        return target._from_native(native, native.model_path())

    @staticmethod
    def snapshot_info(source: str | os.PathLike[str] | bytes) -> SnapshotInfo:
        """A snapshot's description, read without loading the model."""
        src: str | bytes = source if isinstance(source, bytes) else os.fspath(source)
        return SnapshotInfo(**NativeEngine.snapshot_info(src))

    @property
    def fingerprint(self) -> str:
        """The model's full-content fingerprint (`blake3:<hex>`)."""
        return self._native.fingerprint()

    # --- forkable states -------------------------------------------------

    def save_state(self, name: str) -> StateInfo:
        """Stores the context as an immutable state named `name`."""
        self._native.save_state(name)
        return self.get_state(name)

    def fork(self, name: str | None = None) -> Engine:
        """A new, independent engine continuing from state `name` (or from
        the current context), sharing this engine's mapped weights."""
        return self._from_native(self._native.fork(name), self.path)

    def list_states(self) -> list[StateInfo]:
        """The stored states, by name."""
        return [self._state_info(*row) for row in self._native.list_states()]

    def get_state(self, name: str) -> StateInfo:
        """One stored state (`ZTensorKeyError` if there is none)."""
        for row in self._native.list_states():
            if row[0] == name:
                return self._state_info(*row)
        raise ZTensorKeyError(f"state not found: {name!r}")

    def delete_state(self, name: str) -> None:
        self._native.delete_state(name)

    def use_state(self, name: str) -> None:
        """Replaces the context with stored state `name`."""
        self._native.use_state(name)

    def dump_state(
        self, name: str, path: str | os.PathLike[str], *, compress: bool = False
    ) -> None:
        """Writes stored state `name` as a snapshot file."""
        self._native.dump_state(name, os.fspath(path), compress)

    def load_state(self, name: str, source: str | os.PathLike[str] | bytes) -> StateInfo:
        """Reads a snapshot (file or bytes) into stored state `name`,
        checked against this engine; the context is not changed."""
        src: str | bytes = source if isinstance(source, bytes) else os.fspath(source)
        self._native.load_state(name, src)
        return self.get_state(name)

    def _state_info(self, name: str, count: int, created: int, tail: list[int]) -> StateInfo:
        when = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
        return StateInfo(name, count, when, self._native.detokenize(tail)[-80:])

    @property
    def info(self) -> dict[str, Any]:
        """Architecture, sizes, context, threads, KV type and SIMD kernel."""
        return dict(self._info)

    @property
    def n_ctx(self) -> int:
        return int(self._info["n_ctx"])

    @property
    def n_vocab(self) -> int:
        return int(self._info["n_vocab"])

    @property
    def tokens(self) -> list[int]:
        """Every token in the context."""
        return self._native.tokens()

    def tokenize(
        self, text: str, add_bos: bool | None = None, parse_special: bool = True
    ) -> list[int]:
        """Token ids of `text`.

        Args:
            text: The text to tokenize.
            add_bos: Prepend BOS; `None` (the default) follows the model's
                own setting (`tokenizer.ggml.add_bos_token`).
            parse_special: When true (the default, as llama.cpp's server),
                control tokens written in `text` such as `<|im_end|>` become
                those tokens, for prompts that spell out a chat template.
                Pass `False` for any text a user typed, so it cannot forge
                turn markers. User-defined tokens are matched either way.

        Returns:
            The token ids.
        """
        return self._native.tokenize(text, add_bos, parse_special)

    def detokenize(self, ids: list[int]) -> str:
        """Text of `ids` (control tokens give nothing)."""
        return self._native.detokenize(list(ids))

    def eval(self, tokens: list[int], all_logits: bool = True) -> npt.NDArray[np.float32]:
        """Appends `tokens` to the context; returns the logits of every new
        position, shape `(len(tokens), n_vocab)`. With `all_logits=False`
        only the last position's row is computed (shape `(1, n_vocab)`,
        or `(0, n_vocab)` for no tokens): a faster prompt prefill."""
        return self._native.eval(list(tokens), all_logits)

    def reset(self) -> None:
        """Forgets the context (the RNG continues)."""
        self._native.reset()

    def stream(
        self,
        prompt: str = "",
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        *,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        from_state: str | None = None,
        new_state: str | None = None,
    ) -> Iterator[Token]:
        """Continues the context with `prompt` and yields tokens as they are
        produced. An empty prompt just continues; `seed` reseeds the RNG
        (omitted, the live RNG continues). Stops at `max_tokens`, EOS, a
        stop string (the token completing it is not yielded) or a full
        context. `from_state` first switches to that stored state;
        `new_state` stores the context reached at the end."""
        if from_state is not None:
            self._native.use_state(from_state)
        try:
            yield from self._stream(
                prompt,
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                stop,
                seed,
                frequency_penalty,
                presence_penalty,
                penalty_last_n,
            )
        finally:
            if new_state is not None:
                self._native.save_state(new_state)

    def _stream(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        stop: list[str] | None,
        seed: int | None,
        frequency_penalty: float,
        presence_penalty: float,
        penalty_last_n: int,
    ) -> Iterator[Token]:
        self._native.start(
            prompt,
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            penalty_last_n,
            list(stop or []),
            seed,
        )
        eos = self._info["eos"]
        while True:
            step = self._native.next_token()
            if step is None:
                return
            tid, text, position, logprob, special = step
            yield Token(tid, position, text, logprob, special, tid == eos)

    def stream_batches(
        self, prompt: str = "", batch_size: int = 8, **kwargs: Any
    ) -> Iterator[TokenBatch]:
        """Like `stream`, grouping tokens into `TokenBatch`es; the last one
        has `is_final` set."""
        batch = TokenBatch()
        for tok in self.stream(prompt, **kwargs):
            batch.add(tok)
            if len(batch) >= batch_size:
                yield batch
                batch = TokenBatch()
        batch.is_final = True
        yield batch

    def generate(
        self,
        prompt: str = "",
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> str:
        """Generates and returns the text (cut before a stop string)."""
        for _ in self.stream(
            prompt,
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            stop,
            seed,
            **kwargs,
        ):
            pass
        return self._native.generated_text()

    def __repr__(self) -> str:
        i = self._info
        return f"<ztensor.engine.Engine {i['arch']} n_ctx={i['n_ctx']} tokens={len(self.tokens)}>"


from ._async import AsyncEngine  # noqa: E402  (it builds on Engine)
