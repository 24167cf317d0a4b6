"""`AsyncEngine`: the engine for asyncio code. Each computing call runs in
a worker thread (the GIL is released while it computes), one at a time per
engine, so the event loop stays responsive."""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .engine import Engine, GenerateResult, Token

_T = TypeVar("_T")


class AsyncEngine:
    """Wraps an `Engine`; `generate`, `stream`, `snapshot` and `restore`
    are awaitable. Construct from a model path (as `Engine`) or wrap an
    existing engine with `AsyncEngine.wrap(engine)`."""

    def __init__(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        self._setup(Engine(path, **kwargs))

    def _setup(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock()
        # One worker thread per engine: the engine's runs belong to the
        # thread that started them, so all of ours come from one thread.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ztensor-engine")

    @classmethod
    def wrap(cls, engine: Engine) -> AsyncEngine:
        """Wraps an existing engine.

        Args:
            engine: The engine to drive from asyncio.

        Returns:
            An async engine sharing `engine`.
        """
        a = cls.__new__(cls)
        a._setup(engine)
        return a

    async def _call(self, func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(func, *args, **kwargs))

    def interrupt(self, exec_id: str) -> bool:
        """Stops run `exec_id` before its next token (`Engine.interrupt`).

        Args:
            exec_id: The id passed to `stream`/`generate`.

        Returns:
            True if a run with that id was pending or running.
        """
        return self.engine.interrupt(exec_id)

    async def generate(self, prompt: str = "", **kwargs: Any) -> GenerateResult:
        """`Engine.generate`, awaited.

        Cancelling the awaiting task interrupts the run (no new state is
        stored).

        Args:
            prompt: Text to continue.
            **kwargs: Sampling arguments of `Engine.generate`.

        Returns:
            The generated text as a `GenerateResult`.

        Raises:
            asyncio.CancelledError: The awaiting task was cancelled (the run
                is interrupted first).
        """
        exec_id = kwargs.pop("exec_id", None) or uuid.uuid4().hex
        async with self._lock:
            fut = self._call(self.engine.generate, prompt, exec_id=exec_id, **kwargs)
            task = asyncio.ensure_future(fut)
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                self.engine.interrupt(exec_id)
                await asyncio.gather(task, return_exceptions=True)
                raise

    async def stream(self, prompt: str = "", **kwargs: Any) -> AsyncIterator[Token]:
        """`Engine.stream` as an async iterator.

        Each token is computed in a worker thread and yielded as soon as it
        is ready. Leaving the loop early (or cancelling) ends the run as
        interrupted.

        Args:
            prompt: Text to continue.
            **kwargs: Sampling arguments of `Engine.stream`.

        Returns:
            An async iterator of `Token`s.
        """
        async with self._lock:
            it = self.engine.stream(prompt, **kwargs)
            done = object()
            try:
                while True:
                    tok = await self._call(next, it, done)
                    if tok is done:
                        return
                    assert isinstance(tok, Token)
                    yield tok
            finally:
                it.cancel()
                await self._call(it.close)

    async def snapshot(self, path: str | os.PathLike[str], *, compress: bool = False) -> None:
        """`Engine.snapshot`, awaited.

        Args:
            path: Target `.zt` path.
            compress: Store the parts zstd-compressed.
        """
        async with self._lock:
            await self._call(self.engine.snapshot, path, compress=compress)

    async def snapshot_bytes(self, *, compress: bool = False) -> bytes:
        """`Engine.snapshot_bytes`, awaited.

        Args:
            compress: Store the parts zstd-compressed.

        Returns:
            The snapshot's bytes.
        """
        async with self._lock:
            return await self._call(self.engine.snapshot_bytes, compress=compress)

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
            await self._call(self.engine.restore, path)
