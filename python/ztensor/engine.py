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

import contextlib
import datetime
import json
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from ._errors import SnapshotError, ZTensorKeyError, ZTensorValueError
from ._native import NativeEngine
from ._native import dequantize as _dequantize
from ._reader import Reader
from ._stream import GenerateResult, Token, TokenBatch, TokenStream

__all__ = [
    "AsyncEngine",
    "Engine",
    "GenerateResult",
    "SamplerSettings",
    "SnapshotInfo",
    "StateInfo",
    "Token",
    "TokenBatch",
    "TokenStream",
    "dequantize",
]

# The generation types live in `_stream`; they keep `ztensor.engine` as
# their home (reprs, pickles and docs name `ztensor.engine.Token`, ...).
for _cls in (GenerateResult, Token, TokenBatch, TokenStream):
    _cls.__module__ = __name__
del _cls

#: The stop reasons a generation reports.
STOP_REASONS = ("eos", "stop", "length", "interrupted")

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
class SamplerSettings:
    """The sampler settings a generation uses for the arguments it omits:
    the engine's last run's, or a restored snapshot's."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    penalty_last_n: int

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> SamplerSettings:
        # The engine keeps float32; show each as its shortest decimal
        # (0.9, not 0.8999999761581421).
        f = {k: float(str(np.float32(v))) for k, v in d.items() if isinstance(v, float)}
        return cls(**{**d, **f})


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
    sampler: SamplerSettings


@dataclass(frozen=True)
class StateInfo:
    """A stored state: its size, when it was taken and how its text ends."""

    name: str
    tokens_count: int
    created: datetime.datetime
    text_tail: str


def dequantize(reader: Reader, name: str) -> npt.NDArray[np.float32]:
    """A weight as float32 in its logical shape.

    Args:
        reader: An open file.
        name: A dense f32/f16/bf16 tensor, or the ggml blocks of a
            `gguf.<type>/1` object (q4_0 ... q8_0, q2_k ... q6_k), decoded
            with the engine's own kernels.

    Returns:
        The values as float32.
    """
    meta = reader.metadata(name)
    obj = reader._native_reader().object(name)
    part = obj["parts"]["data"]
    data = reader._native_reader().part(name, "data")
    n = int(np.prod(meta.shape, dtype=np.int64)) if meta.shape else 1
    out = _dequantize(obj["layout"], part["dtype"], data, n)
    return out.reshape(tuple(meta.shape))


@contextlib.contextmanager
def _snapshot_io(what: str) -> Iterator[None]:
    """File errors while writing or reading a snapshot (or the model it
    names) become `SnapshotError` (fault `"io"`), chained to the OS error."""
    try:
        yield
    except SnapshotError:
        raise
    except OSError as exc:
        err = SnapshotError(f"{what}: {exc}")
        err.fault = "io"
        raise err from exc


def _count(name: str, value: int, limit: int = 2**63 - 1) -> int:
    """Checks a non-negative integer parameter.

    Args:
        name: The parameter's name, for the message.
        value: The value passed.
        limit: The largest value allowed.

    Returns:
        `value`, unchanged.

    Raises:
        ValueError: `value` is not an int (bools included) or is outside
            `0..=limit`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ZTensorValueError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= limit:
        raise ZTensorValueError(f"{name} must be between 0 and {limit}, got {value}")
    return int(value)


class Engine:
    """A model with its context (tokens, KV cache, sampler RNG).

    Args:
        path: A `.zt` or GGUF model file.
        n_ctx: Context length (0: the model's training context, at most 4096).
        n_threads: Worker threads (0: all cores).
        kv_dtype: KV cache element type, `"f16"` (default) or `"f32"`.
        seed: Seed of the sampler's RNG (xoshiro256**).

    Raises:
        ValueError: `n_ctx`, `n_threads` or `seed` is not a non-negative int
            (or `seed` is 2**64 or more), `n_threads` is over 1024, or
            `kv_dtype` is unknown.
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
        self._setup(
            NativeEngine(
                os.fspath(path),
                _count("n_ctx", n_ctx),
                _count("n_threads", n_threads),
                kv_dtype,
                _count("seed", seed, 2**64 - 1),
            )
        )

    def _setup(self, native: NativeEngine) -> None:
        self._native = native
        self._info: dict[str, Any] = native.info()
        # Resolved (absolute), as snapshots record it.
        self.path = native.model_path()
        self._runs: dict[str, weakref.ref[TokenStream]] = {}
        self._runs_lock = threading.RLock()

    @classmethod
    def _from_native(cls, native: NativeEngine, path: str | None = None) -> Engine:
        e = cls.__new__(cls)
        e._setup(native)
        return e

    # --- snapshots -------------------------------------------------------

    def snapshot(self, path: str | os.PathLike[str], *, compress: bool = False) -> None:
        """Saves the context (used KV rows, tokens, last logits, sampler
        settings, live RNG) to a `.zt` file, atomically.

        Args:
            path: Target path.
            compress: Store the parts zstd-compressed.

        Raises:
            SnapshotError: The file cannot be written (fault "io").
        """
        with _snapshot_io(f"writing snapshot {os.fspath(path)!r}"):
            self._native.snapshot(os.fspath(path), compress)

    def snapshot_bytes(self, *, compress: bool = False) -> bytes:
        """The snapshot as bytes.

        Args:
            compress: Store the parts zstd-compressed.

        Returns:
            The snapshot file's bytes.

        Raises:
            SnapshotError: The snapshot cannot be written (fault "io").
        """
        with _snapshot_io("writing the snapshot"):
            return self._native.snapshot_bytes(compress)

    @_hybridmethod
    def restore(
        target: Any,
        path: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_threads: int = 0,
    ) -> Engine:
        """Restores a snapshot file.

        On an engine: replaces its context with the snapshot's, after checking
        the model fingerprint, tokenizer, shapes, token ids and digests (on
        failure the engine is unchanged). On the class: builds a new engine from
        the model at `model_path` with the snapshot's context length and KV type.
        The snapshot's sampler settings become the engine's defaults.

        Args:
            path: The snapshot file.
            model_path: On the class, the model to load (default: the resolved
                path the snapshot records).
            n_threads: On the class, worker threads (0: all cores).

        Returns:
            The engine (this one, or the new one).

        Raises:
            SnapshotError: The snapshot is invalid, unreadable (fault "io") or
                does not match the model (`FingerprintMismatchError` for other
                weights).
        """
        with _snapshot_io(f"restoring snapshot {os.fspath(path)!r}"):
            if isinstance(target, Engine):
                target._native.restore_path(os.fspath(path))
                return target
            native = NativeEngine.from_snapshot(
                os.fspath(path),
                None if model_path is None else os.fspath(model_path),
                _count("n_threads", n_threads),
            )
        return target._from_native(native)

    @_hybridmethod
    def restore_bytes(
        target: Any,
        blob: bytes,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_threads: int = 0,
    ) -> Engine:
        """`restore` from bytes held in memory (no temporary file).

        Args:
            blob: The snapshot's bytes.
            model_path: On the class, the model to load (required there).
            n_threads: On the class, worker threads (0: all cores).

        Returns:
            The engine (this one, or the new one).

        Raises:
            TypeError: Called on the class without `model_path`.
            SnapshotError: The snapshot is invalid or does not match the model.
        """
        if isinstance(target, Engine):
            with _snapshot_io("restoring the snapshot"):
                target._native.restore_bytes(bytes(blob))
            return target
        if model_path is None:
            raise TypeError("Engine.restore_bytes needs model_path=")
        with _snapshot_io("restoring the snapshot"):
            native = NativeEngine.from_snapshot(
                bytes(blob), os.fspath(model_path), _count("n_threads", n_threads)
            )
        return target._from_native(native)

    @staticmethod
    def snapshot_info(source: str | os.PathLike[str] | bytes) -> SnapshotInfo:
        """A snapshot's description, read without loading the model.

        Args:
            source: A snapshot file path or its bytes.

        Returns:
            The snapshot's `SnapshotInfo`.

        Raises:
            SnapshotError: The source is not a valid snapshot.
        """
        src: str | bytes = source if isinstance(source, bytes) else os.fspath(source)
        with _snapshot_io("reading the snapshot"):
            d = NativeEngine.snapshot_info(src)
        d["sampler"] = SamplerSettings._from_native(d["sampler"])
        return SnapshotInfo(**d)

    @property
    def fingerprint(self) -> str:
        """The model's full-content fingerprint (`blake3:<hex>`)."""
        return self._native.fingerprint()

    # --- forkable states -------------------------------------------------

    def save_state(self, name: str) -> StateInfo:
        """Stores the context as an immutable state.

        Args:
            name: The state's name: 1-128 of `A-Z a-z 0-9 _ -`, not taken.

        Returns:
            The stored state's `StateInfo`.

        Raises:
            ZTensorValueError: The name is taken (states are immutable:
                `delete_state` first) or not a valid name.
        """
        self._native.save_state(name)
        return self.get_state(name)

    def fork(self, name: str | None = None) -> Engine:
        """A new, independent engine sharing this engine's mapped weights.

        Args:
            name: The stored state to continue from (None: the current context).

        Returns:
            The new engine.

        Raises:
            ZTensorKeyError: No state has that name.
        """
        return self._from_native(self._native.fork(name))

    def list_states(self) -> list[StateInfo]:
        """The stored states.

        Returns:
            Their `StateInfo`s, by name.
        """
        return [self._state_info(*row) for row in self._native.list_states()]

    def get_state(self, name: str) -> StateInfo:
        """One stored state.

        Args:
            name: The state's name.

        Returns:
            Its `StateInfo`.

        Raises:
            ZTensorKeyError: No state has that name.
        """
        for row in self._native.list_states():
            if row[0] == name:
                return self._state_info(*row)
        raise ZTensorKeyError(f"state not found: {name!r}")

    def delete_state(self, name: str) -> None:
        """Deletes a stored state.

        Args:
            name: The state's name.

        Raises:
            ZTensorKeyError: No state has that name.
        """
        self._native.delete_state(name)

    def use_state(self, name: str) -> None:
        """Replaces the context with a stored state.

        Args:
            name: The state's name.

        Raises:
            ZTensorKeyError: No state has that name.
        """
        self._native.use_state(name)

    def dump_state(
        self, name: str, path: str | os.PathLike[str], *, compress: bool = False
    ) -> None:
        """Writes a stored state as a snapshot file.

        Args:
            name: The state's name.
            path: Target path.
            compress: Store the parts zstd-compressed.

        Raises:
            ZTensorKeyError: No state has that name.
            SnapshotError: The file cannot be written (fault "io").
        """
        with _snapshot_io(f"writing state {name!r} to {os.fspath(path)!r}"):
            self._native.dump_state(name, os.fspath(path), compress)

    def load_state(self, name: str, source: str | os.PathLike[str] | bytes) -> StateInfo:
        """Reads a snapshot into a stored state, checked against this engine; the
        context is not changed.

        Args:
            name: The state's name.
            source: A snapshot file path or its bytes.

        Returns:
            The stored state's `StateInfo`.

        Raises:
            SnapshotError: The snapshot is invalid or does not match the model
                (`FingerprintMismatchError` for other weights).
        """
        src: str | bytes = source if isinstance(source, bytes) else os.fspath(source)
        with _snapshot_io(f"reading state {name!r}"):
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
        """The context length in tokens."""
        return int(self._info["n_ctx"])

    @property
    def n_vocab(self) -> int:
        """The vocabulary size."""
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
        """Text of token ids (control tokens give nothing).

        Args:
            ids: Token ids.

        Returns:
            The text.
        """
        return self._native.detokenize(list(ids))

    def eval(self, tokens: list[int], all_logits: bool = True) -> npt.NDArray[np.float32]:
        """Appends tokens to the context and computes their logits.

        Args:
            tokens: Token ids to append.
            all_logits: Compute every new position's logits; False computes
                only the last position's row (a faster prompt prefill).

        Returns:
            Logits of shape `(len(tokens), n_vocab)`, or `(1, n_vocab)` (`(0,
            n_vocab)` for no tokens) without `all_logits`.
        """
        return self._native.eval(list(tokens), all_logits)

    def reset(self) -> None:
        """Forgets the context (the RNG continues)."""
        self._native.reset()

    def clear_grammar(self) -> None:
        """Drops the live grammar (a constrained run's, or a restored
        snapshot's): a later run with an empty prompt and no grammar then
        continues unconstrained instead of under it."""
        self._native.clear_grammar()

    @property
    def grammar(self) -> str | None:
        """The GBNF of the live grammar an empty-prompt run continues
        under, or None."""
        return self._native.grammar_source()

    @property
    def sampler(self) -> SamplerSettings:
        """The sampler settings used for arguments a generation omits: the
        last run's, or a restored snapshot's (defaults on a new engine)."""
        return SamplerSettings._from_native(self._native.sampler())

    def interrupt(self, exec_id: str) -> bool:
        """Stops the run `exec_id` before its next token, from any thread.

        The run ends with stop reason `"interrupted"` and stores no new
        state. A run that has not started yet ends without running.

        Args:
            exec_id: The id given to (or made by) `stream`/`generate`.

        Returns:
            True if a run with that id was pending or running.
        """
        with self._runs_lock:
            ref = self._runs.get(exec_id)
        run = None if ref is None else ref()
        if run is None or run.stop_reason is not None:
            return False
        run.cancel()
        return True

    def stream(
        self,
        prompt: str = "",
        max_tokens: int = 128,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        *,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        penalty_last_n: int | None = None,
        from_state: str | None = None,
        new_state: str | None = None,
        exec_id: str | None = None,
        grammar: str | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> TokenStream:
        """Continues the context with `prompt` and yields tokens as they are
        produced.

        Stops at `max_tokens`, EOS (yielded, `is_eos()`), a stop string (the
        token completing it is yielded with its text cut before it) or a full
        context; the last token carries `stop_reason`. Runs from other threads
        wait for this one to end.

        Args:
            prompt: Text to append first; empty just continues.
            max_tokens: Most tokens to generate.
            temperature: Sampling temperature (0: greedy). Sampler settings
                left None keep the engine's (`Engine.sampler`: the last run's
                or a restored snapshot's; on a new engine temperature 0.8,
                top_k 40, top_p 0.95, min_p 0.05, no penalties over the last
                64).
            top_k: Keep the k most likely tokens (0: all).
            top_p: Nucleus sampling mass.
            min_p: Drop tokens below this fraction of the top probability.
            repeat_penalty: Penalty for recently seen tokens (1: none).
            stop: Strings that end the generation.
            seed: Reseed the RNG (None: the live RNG continues).
            frequency_penalty: Subtracted per earlier occurrence.
            presence_penalty: Subtracted once for any earlier occurrence.
            penalty_last_n: How many recent tokens the penalties look at.
            from_state: Switch to this stored state first.
            new_state: Store the context reached at the end under this name,
                only if the run reaches its natural end (not after an error,
                an interrupt or an early `close()`).
            exec_id: Names the run for `Engine.interrupt` (default: a new uuid).
            grammar: GBNF text (llama.cpp's grammar format) the output must
                follow. A run with a prompt starts the grammar afresh; an
                empty prompt under the same grammar, or with no grammar,
                continues the live one (`clear_grammar()` drops it). If the
                grammar allows no token the run ends with `stop_reason`
                `"grammar"`, never with unconstrained text.
            json_schema: A JSON Schema the output must be valid JSON under
                (converted to a grammar; unsupported keywords raise).

        Returns:
            A `TokenStream`: an iterator of `Token`s with `cancel()`,
            `stop_reason` and `exec_id`.

        Raises:
            ZTensorValueError: A run with this `exec_id` is still going.
            ZTensorValueError: Both `grammar` and `json_schema` are given.
            ZTensorValueError: A bad setting: `max_tokens`, `top_k`,
                `penalty_last_n` or `seed` not an int in range, `temperature`
                < 0 or not finite, `top_p` outside (0, 1], `min_p` outside
                [0, 1], `repeat_penalty` <= 0, an empty stop string, or a
                `new_state` name that is taken or not 1-128 of
                `A-Z a-z 0-9 _ -` (raised when the run starts).
        """
        if grammar is not None and json_schema is not None:
            raise ZTensorValueError("give grammar or json_schema, not both")
        for name, value, limit in (
            ("max_tokens", max_tokens, 2**32),
            ("top_k", top_k, 2**32),
            ("penalty_last_n", penalty_last_n, 2**32),
            ("seed", seed, 2**64),
        ):
            if value is None and name != "max_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
                raise ZTensorValueError(f"{name} = {value!r}: must be an int in [0, {limit})")
        if exec_id is None:
            exec_id = uuid.uuid4().hex
        start = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "min_p": min_p,
            "repeat_penalty": repeat_penalty,
            "frequency_penalty": frequency_penalty,
            "presence_penalty": presence_penalty,
            "penalty_last_n": penalty_last_n,
            "stop": list(stop or []),
            "seed": seed,
            "from_state": from_state,
            "new_state": new_state,
            "grammar": grammar,
            "json_schema": None if json_schema is None else json.dumps(json_schema),
        }
        with self._runs_lock:
            ref = self._runs.get(exec_id)
            live = None if ref is None else ref()
            if live is not None and not live._done:
                raise ZTensorValueError(f"a run with exec_id {exec_id!r} is still going")
            run = TokenStream(self, exec_id, start)
            self._runs[exec_id] = weakref.ref(run)
        return run

    def stream_batches(
        self,
        prompt: str = "",
        batch_size: int = 8,
        *,
        sequence_id: int = 0,
        **kwargs: Any,
    ) -> Iterator[TokenBatch]:
        """Like `stream`, grouping tokens into `TokenBatch`es.

        Args:
            prompt: Text to append first.
            batch_size: Tokens per batch.
            sequence_id: The batches' `sequence_id`.
            **kwargs: The sampling arguments of `stream`.

        Returns:
            An iterator of batches; the last one has `is_final` set and its
            metadata holds `stop_reason` and `exec_id`.
        """
        run = self.stream(prompt, **kwargs)
        with run:
            batch = TokenBatch(sequence_id=sequence_id)
            for tok in run:
                batch.add(tok)
                if len(batch) >= batch_size:
                    yield batch
                    batch = TokenBatch(sequence_id=sequence_id)
        batch.is_final = True
        batch.set_metadata("exec_id", run.exec_id)
        if run.stop_reason is not None:
            batch.set_metadata("stop_reason", run.stop_reason)
        yield batch

    def generate(
        self,
        prompt: str = "",
        max_tokens: int = 128,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> GenerateResult:
        """Generates and returns the text (cut before a stop string).

        Args:
            prompt: Text to append first; empty just continues.
            max_tokens: Most tokens to generate.
            temperature: Sampling temperature (0: greedy; None: the engine's).
            top_k: Keep the k most likely tokens (0: all).
            top_p: Nucleus sampling mass.
            min_p: Drop tokens below this fraction of the top probability.
            repeat_penalty: Penalty for recently seen tokens (1: none).
            stop: Strings that end the generation.
            seed: Reseed the RNG (None: the live RNG continues).
            **kwargs: The keyword-only arguments of `stream`.

        Returns:
            A `GenerateResult`: the text as a `str` whose `metadata` tells how
            the run ended (`stop_reason`, `exec_id`, `tokens`, `state_saved`).
        """
        run = self.stream(
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
        )
        with run:
            for _ in run:
                pass
        meta = {
            "exec_id": run.exec_id,
            "tokens": str(run.tokens_count),
            "state_saved": "true" if run.state_saved else "false",
        }
        if run.stop_reason is not None:
            meta["stop_reason"] = run.stop_reason
        return GenerateResult(run.text, meta)

    def __repr__(self) -> str:
        i = self._info
        return f"<ztensor.engine.Engine {i['arch']} n_ctx={i['n_ctx']} tokens={len(self.tokens)}>"


from ._async import AsyncEngine  # noqa: E402  (it builds on Engine)
