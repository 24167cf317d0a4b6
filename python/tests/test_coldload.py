"""The parallel copy path: `load_file(copy=True)` and
`read_tensor(copy=True)` read with several threads' large `pread`s, equal
to the zero-copy views, digests checked, typed errors on damage."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import ztensor
from ztensor import ChecksumError, ZTensorError
from ztensor import numpy as ztnp

# Byte counts around page and 8 MiB chunk boundaries, and an empty tensor.
SIZES = [0, 1, 3, 4095, 4097, 65_537, 200_001, (1 << 20) + 7, (9 << 20) + 5]


def _model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    out: dict[str, np.ndarray] = {}
    for i, n in enumerate(SIZES):
        out[f"u8.{i}"] = rng.integers(0, 256, n, dtype=np.uint8)
    out["f32"] = rng.standard_normal((333, 517), dtype=np.float32)
    out["f16"] = rng.standard_normal((7, 3, 5)).astype(np.float16)
    out["i64"] = rng.integers(-(1 << 40), 1 << 40, 1001, dtype=np.int64)
    out["mask"] = rng.integers(0, 2, 10_001).astype(bool)
    return out


@pytest.fixture()
def model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    tensors = _model()
    path = tmp_path / "m.zt"
    ztnp.save_file(tensors, path)
    return path, tensors


class TestParallelCopies:
    def test_copies_equal_the_views_and_the_input(self, model: tuple[Path, dict]) -> None:
        path, want = model
        views = ztnp.load_file(path)
        for threads in (None, 1, 3, 16):
            got = ztnp.load_file(path, copy=True, threads=threads)
            assert sorted(got) == sorted(want)
            for name, arr in want.items():
                assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
                np.testing.assert_array_equal(got[name], arr)
                np.testing.assert_array_equal(got[name], views[name])
                assert got[name].flags.writeable and got[name].flags.c_contiguous

    @pytest.mark.parametrize("threads", [0, -1, 2.5, True])
    def test_bad_thread_counts_are_value_errors(
        self, model: tuple[Path, dict], threads: object
    ) -> None:
        path, _ = model
        with pytest.raises(ValueError, match="threads must be a positive int"):
            ztnp.load_file(path, copy=True, threads=threads)  # type: ignore[arg-type]

    def test_read_tensor_copy_is_writable_and_equal(self, model: tuple[Path, dict]) -> None:
        path, want = model
        with ztensor.Reader(path) as r:
            big = r.read_tensor("u8.8", copy=True)
            np.testing.assert_array_equal(big, want["u8.8"])
            big[0] ^= 1
            assert r.read_tensor("u8.8")[0] == want["u8.8"][0]

    def test_sparse_and_compressed_tensors_load_too(self, tmp_path: Path) -> None:
        import scipy.sparse

        path = tmp_path / "mixed.zt"
        dense = np.arange(3 << 20, dtype=np.float32).reshape(3, -1)
        with ztensor.Writer(path) as w:
            w.add_tensor("dense", dense)
            w.add_tensor("packed", dense, compress=True)
            m = scipy.sparse.random(40, 50, density=0.1, format="csr", random_state=1)
            w.add_sparse_csr("csr", m.data.astype(np.float32), m.indices, m.indptr, (40, 50))
        got = ztnp.load_file(path, copy=True)
        np.testing.assert_array_equal(got["dense"], dense)
        np.testing.assert_array_equal(got["packed"], dense)
        assert got["csr"].shape == (40, 50)


def _data_offset(path: Path, name: str) -> int:
    with ztensor.Reader(path) as r:
        return int(r.metadata(name).offset)


class TestDamage:
    def test_a_changed_byte_is_a_checksum_error_for_copies(self, model: tuple[Path, dict]) -> None:
        path, _ = model
        at = _data_offset(path, "u8.8") + (5 << 20)
        with open(path, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x10]))
        with pytest.raises(ChecksumError, match="u8.8"):
            ztnp.load_file(path, copy=True)
        with ztensor.Reader(path) as r:
            with pytest.raises(ChecksumError):
                r.read_tensor("u8.8", copy=True)
            r.read_tensor("u8.7", copy=True)

    def test_a_file_truncated_under_the_reader_is_an_error(self, model: tuple[Path, dict]) -> None:
        path, _ = model
        with ztensor.Reader(path) as r:
            os.truncate(path, _data_offset(path, "u8.8") + 1000)
            with pytest.raises(ZTensorError):
                r.read_tensor("u8.8", copy=True)
        with pytest.raises(ZTensorError):
            ztnp.load_file(path, copy=True)
