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

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ._native import NativeEngine
from ._native import dequantize as _dequantize
from ._reader import Reader

__all__ = ["Engine", "Token", "TokenBatch", "dequantize"]


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
        """Token ids of `text`; `add_bos=None` follows the model's setting."""
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
    ) -> Iterator[Token]:
        """Continues the context with `prompt` and yields tokens as they are
        produced. An empty prompt just continues; `seed` reseeds the RNG
        (omitted, the live RNG continues). Stops at `max_tokens`, EOS, a
        stop string (the token completing it is not yielded) or a full
        context."""
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
