"""Shared fixtures: every test runs in its own temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path: Path) -> Iterator[Path]:
    """Runs the test inside a fresh temporary directory."""
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
