"""Engine snapshots with a `pickle`-shaped surface, stored as `.zt` files.

A snapshot holds an engine's context, not its weights: the KV rows of the
used positions, the token ids, the last logits, the sampler settings and
the RNG's live state, plus what it must match: the model's full-content
fingerprint (BLAKE3 over every tensor), the tokenizer's digest and the
cache geometry. Restoring checks all of it (and every part's digest)
before the engine is touched.

Example:
    >>> from ztensor import snapshot                        # doctest: +SKIP
    >>> snapshot.dump(engine, "chat.zt")                     # doctest: +SKIP
    >>> engine2 = snapshot.load("chat.zt")                   # doctest: +SKIP
    >>> blob = snapshot.dumps(engine)                        # doctest: +SKIP
    >>> engine3 = snapshot.loads(blob, model_path="m.zt")    # doctest: +SKIP
"""

from __future__ import annotations

import os

from ._errors import FingerprintMismatchError, SnapshotError
from .engine import Engine, SnapshotInfo

__all__ = [
    "FingerprintMismatchError",
    "SnapshotError",
    "SnapshotInfo",
    "dump",
    "dumps",
    "load",
    "loads",
    "snapshot_info",
]


def dump(engine: Engine, path: str | os.PathLike[str], *, compress: bool = False) -> None:
    """Writes `engine`'s state to `path` atomically (`engine.snapshot`).

    Args:
        engine: The engine whose context to save.
        path: Target `.zt` path.
        compress: Store the parts zstd-compressed.

    Raises:
        SnapshotError: The snapshot cannot be written.
    """
    engine.snapshot(path, compress=compress)


def dumps(engine: Engine, *, compress: bool = False) -> bytes:
    """`engine`'s state as bytes (`engine.snapshot_bytes`).

    Args:
        engine: The engine whose context to save.
        compress: Store the parts zstd-compressed.

    Returns:
        The snapshot file's bytes.
    """
    return engine.snapshot_bytes(compress=compress)


def load(
    path: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str] | None = None,
    n_threads: int = 0,
) -> Engine:
    """A new engine from a snapshot file.

    Args:
        path: The snapshot file.
        model_path: The model to load (default: the path recorded in the
            snapshot).
        n_threads: Worker threads (0: all cores).

    Returns:
        An engine with the snapshot's context length, KV type and context.

    Raises:
        SnapshotError: The snapshot is invalid or does not match the model
            (`FingerprintMismatchError` for other weights).
    """
    return Engine.restore(path, model_path=model_path, n_threads=n_threads)


def loads(blob: bytes, *, model_path: str | os.PathLike[str], n_threads: int = 0) -> Engine:
    """A new engine from snapshot bytes, read in memory (no temporary file).

    Args:
        blob: The snapshot's bytes.
        model_path: The model to load.
        n_threads: Worker threads (0: all cores).

    Returns:
        An engine with the snapshot's context.

    Raises:
        SnapshotError: The snapshot is invalid or does not match the model
            (`FingerprintMismatchError` for other weights).
    """
    return Engine.restore_bytes(blob, model_path=model_path, n_threads=n_threads)


def snapshot_info(source: str | os.PathLike[str] | bytes) -> SnapshotInfo:
    """A snapshot's description, read without loading the model.

    Args:
        source: A snapshot file path or its bytes.

    Returns:
        Arch, model path, fingerprint, tokenizer digest, context, threads,
        version, magic, token count and cache geometry.

    Raises:
        SnapshotError: The source is not a valid snapshot.
    """
    return Engine.snapshot_info(source)
