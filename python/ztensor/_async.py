"""`AsyncEngine`: the engine for asyncio code. Each computing call runs in
a worker thread (the GIL is released while it computes), one at a time per
engine, so the event loop stays responsive."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from .engine import Engine, Token


class AsyncEngine:
    """Wraps an `Engine`; `generate`, `stream`, `snapshot` and `restore`
    are awaitable. Construct from a model path (as `Engine`) or wrap an
    existing engine with `AsyncEngine.wrap(engine)`."""

    def __init__(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        self.engine = Engine(path, **kwargs)
        self._lock = asyncio.Lock()

    @classmethod
    def wrap(cls, engine: Engine) -> AsyncEngine:
        """Wraps an existing engine.

        Args:
            engine: The engine to drive from asyncio.

        Returns:
            An async engine sharing `engine`.
        """
        a = cls.__new__(cls)
        a.engine = engine
        a._lock = asyncio.Lock()
        return a

    async def generate(self, prompt: str = "", **kwargs: Any) -> str:
        """`Engine.generate`, awaited.

        Args:
            prompt: Text to continue.
            **kwargs: Sampling arguments of `Engine.generate`.

        Returns:
            The generated text.
        """
        async with self._lock:
            return await asyncio.to_thread(self.engine.generate, prompt, **kwargs)

    async def stream(self, prompt: str = "", **kwargs: Any) -> AsyncIterator[Token]:
        """`Engine.stream` as an async iterator: each token is computed in a
        worker thread and yielded as soon as it is ready.

        Args:
            prompt: Text to continue.
            **kwargs: Sampling arguments of `Engine.stream`.

        Returns:
            An async iterator of `Token`s.
        """
        async with self._lock:
            it = self.engine.stream(prompt, **kwargs)
            done = object()
            while True:
                tok = await asyncio.to_thread(next, it, done)
                if tok is done:
                    return
                assert isinstance(tok, Token)
                yield tok

    async def snapshot(self, path: str | os.PathLike[str], *, compress: bool = False) -> None:
        """`Engine.snapshot`, awaited.

        Args:
            path: Target `.zt` path.
            compress: Store the parts zstd-compressed.
        """
        async with self._lock:
            await asyncio.to_thread(self.engine.snapshot, path, compress=compress)

    async def snapshot_bytes(self, *, compress: bool = False) -> bytes:
        """`Engine.snapshot_bytes`, awaited.

        Args:
            compress: Store the parts zstd-compressed.

        Returns:
            The snapshot's bytes.
        """
        async with self._lock:
            return await asyncio.to_thread(self.engine.snapshot_bytes, compress=compress)

    @classmethod
    async def restore(
        cls,
        path: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_threads: int = 0,
    ) -> AsyncEngine:
        """A new async engine from a snapshot file (see `Engine.restore`).

        Args:
            path: The snapshot file.
            model_path: The model to load (default: the recorded path).
            n_threads: Worker threads (0: all cores).

        Returns:
            The new async engine.
        """
        engine = await asyncio.to_thread(
            Engine.restore, path, model_path=model_path, n_threads=n_threads
        )
        return cls.wrap(engine)

    async def restore_into(self, path: str | os.PathLike[str]) -> None:
        """Replaces this engine's context with a snapshot's.

        Args:
            path: The snapshot file.
        """
        async with self._lock:
            await asyncio.to_thread(self.engine.restore, path)
