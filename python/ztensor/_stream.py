"""What a generation yields: `Token`s, grouped into `TokenBatch`es, from a
`TokenStream` run, and the `GenerateResult` text. Re-exported by
`ztensor.engine`, where they are documented and imported from."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine


@dataclass
class Token:
    """One token of a generation."""

    id: int
    position: int = 0
    text: str = ""
    logprob: float = 0.0
    is_special: bool = False
    eos: bool = False
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        """Checks the fields' types and ranges.

        Raises:
            TypeError: A field of the wrong type (named).
            ValueError: A negative `id` or `position`, or a NaN `logprob`.
        """
        for name in ("id", "position"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Token.{name} must be an int, not {type(v).__name__}")
            if v < 0:
                raise ValueError(f"Token.{name} = {v}: must be >= 0")
        if not isinstance(self.text, str):
            raise TypeError(f"Token.text must be a str, not {type(self.text).__name__}")
        if isinstance(self.logprob, bool) or not isinstance(self.logprob, (int, float)):
            raise TypeError(f"Token.logprob must be a float, not {type(self.logprob).__name__}")
        if math.isnan(self.logprob):
            raise ValueError("Token.logprob is NaN")
        self.logprob = float(self.logprob)
        for name in ("is_special", "eos"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Token.{name} must be a bool")
        if self.stop_reason is not None and not isinstance(self.stop_reason, str):
            raise TypeError("Token.stop_reason must be a str or None")

    @classmethod
    def with_text(cls, id: int, text: str, position: int, logprob: float = 0.0) -> Token:
        """A token from its id, text and position.

        Args:
            id: Token id.
            text: Its text.
            position: Its position in the context.
            logprob: Log-probability the model gave it.

        Returns:
            The token.
        """
        return cls(id=id, position=position, text=text, logprob=logprob)

    def prob(self) -> float:
        """The probability the model gave this token.

        Returns:
            exp(`logprob`).
        """
        return math.exp(self.logprob)

    def is_eos(self) -> bool:
        """Whether this is the model's end-of-sequence token.

        Returns:
            True for EOS.
        """
        return self.eos

    def to_dict(self) -> dict[str, Any]:
        """The token's fields as a dict.

        Returns:
            id, position, text, logprob, is_special and, on the last token of
            a run, stop_reason.
        """
        d: dict[str, Any] = {
            "id": self.id,
            "position": self.position,
            "text": self.text,
            "logprob": self.logprob,
            "is_special": self.is_special,
        }
        if self.stop_reason is not None:
            d["stop_reason"] = self.stop_reason
        return d

    def encode(self) -> bytes:
        """The token as UTF-8 JSON.

        Returns:
            The JSON bytes of `to_dict()`.
        """
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
        """A batch of the given tokens.

        Args:
            tokens: The tokens (copied into a new list).
            sequence_id: The sequence they belong to.

        Returns:
            The batch.

        Raises:
            TypeError: An item is not a `Token`.
        """
        tokens = list(tokens)
        for i, t in enumerate(tokens):
            if not isinstance(t, Token):
                raise TypeError(f"tokens[{i}] is a {type(t).__name__}, not a Token")
        return cls(sequence_id=sequence_id, tokens=tokens)

    def add(self, token: Token) -> None:
        """Appends a token.

        Args:
            token: The token to append.

        Raises:
            TypeError: `token` is not a `Token`.
        """
        if not isinstance(token, Token):
            raise TypeError(f"add() takes a Token, not a {type(token).__name__}")
        self.tokens.append(token)

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[Token]:
        return iter(self.tokens)

    def is_empty(self) -> bool:
        """Whether the batch holds no tokens.

        Returns:
            True when empty.
        """
        return not self.tokens

    def text(self) -> str:
        """The batch's text.

        Returns:
            The tokens' texts, concatenated.
        """
        return "".join(t.text for t in self.tokens)

    def token_ids(self) -> list[int]:
        """The batch's token ids.

        Returns:
            The ids, in order.
        """
        return [t.id for t in self.tokens]

    def positions(self) -> list[int]:
        """The batch's context positions.

        Returns:
            The positions, in order.
        """
        return [t.position for t in self.tokens]

    def set_metadata(self, key: str, value: str) -> None:
        """Sets one metadata entry.

        Args:
            key: Entry name.
            value: Entry value.
        """
        self.metadata[key] = value

    def get_metadata(self, key: str) -> str | None:
        """One metadata entry.

        Args:
            key: Entry name.

        Returns:
            Its value, or None.
        """
        return self.metadata.get(key)


class GenerateResult(str):
    """The text `Engine.generate` returns (cut before a stop string), a
    `str` carrying how the run ended in `metadata`: `stop_reason` (`"eos"`,
    `"stop"`, `"length"` or `"interrupted"`), `exec_id`, `tokens` (how many
    were produced) and `state_saved` (`"true"` when `new_state` was
    stored)."""

    metadata: dict[str, str]

    def __new__(cls, text: str, metadata: dict[str, str]) -> GenerateResult:
        obj = super().__new__(cls, text)
        obj.metadata = dict(metadata)
        return obj

    @property
    def stop_reason(self) -> str | None:
        """Why the run ended (see `metadata`)."""
        return self.metadata.get("stop_reason")

    @property
    def exec_id(self) -> str:
        """The run's id."""
        return self.metadata["exec_id"]


class TokenStream(Iterator[Token]):
    """The tokens of one run (`Engine.stream`), produced as they are
    iterated. The run starts at the first `next()`; it holds the engine's
    context until it ends: other threads' generations wait for it.

    Attributes:
        exec_id: The run's id (`Engine.interrupt(exec_id)` stops it).
        stop_reason: Set when the run has ended: `"eos"`, `"stop"`,
            `"length"` or `"interrupted"` (`cancel`, `Engine.interrupt`,
            or closed before its end); None while it runs, and after a
            failure (the exception tells why).
        text: The generated text once ended (cut before a stop string).
        tokens_count: Tokens produced once ended.
        state_saved: True once `new_state` was stored; only a run that
            reaches its natural end (eos, stop string, length) stores it.
    """

    def __init__(self, engine: Engine, exec_id: str, start: dict[str, Any]) -> None:
        self.exec_id = exec_id
        self.stop_reason: str | None = None
        self.text = ""
        self.tokens_count = 0
        self.state_saved = False
        self._native = engine._native
        self._registry = engine._runs
        self._registry_lock = engine._runs_lock
        self._start = start
        self._run: int | None = None
        self._cancelled = False
        self._done = False
        self._lock = threading.RLock()

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> Token:
        if self._done:
            raise StopIteration
        if self._run is None:
            self._begin()
            if self._done:
                raise StopIteration
        assert self._run is not None
        try:
            step = self._native.next_token(self._run)
        except BaseException:
            self._end()
            raise
        if step is None:
            self._end()
            raise StopIteration
        tid, text, position, logprob, special, eos, reason = step
        if reason is not None:
            self._end()
        return Token(tid, position, text, logprob, special, eos, reason)

    def _begin(self) -> None:
        with self._lock:
            cancelled = self._cancelled
        if cancelled:
            self._done = True
            self.stop_reason = "interrupted"
            self._unregister()
            return
        try:
            run = self._native.start(**self._start)
        except BaseException:
            self._done = True
            self._unregister()
            raise
        with self._lock:
            self._run = run
            cancelled = self._cancelled
        if cancelled:
            self._native.interrupt(run)

    def _end(self) -> None:
        """Ends the run (as interrupted if still going) and collects how
        it finished."""
        with self._lock:
            if self._done:
                return
            self._done = True
            run = self._run
        try:
            if run is not None:
                out = self._native.end_run(run)
                if out is not None:
                    self.text, self.stop_reason, self.tokens_count, self.state_saved = out
        finally:
            self._unregister()

    def _unregister(self) -> None:
        with self._registry_lock:
            ref = self._registry.get(self.exec_id)
            if ref is not None and ref() in (self, None):
                del self._registry[self.exec_id]

    def cancel(self) -> None:
        """Stops the run before its next token (from any thread); its
        `stop_reason` becomes `"interrupted"` and no new state is stored.
        A stream not started yet ends without running."""
        with self._lock:
            self._cancelled = True
            run = None if self._done else self._run
        if run is not None:
            self._native.interrupt(run)

    def close(self) -> None:
        """Ends the run now: an unfinished run ends as `"interrupted"` and
        stores no new state."""
        if not self._done:
            self._end()

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
