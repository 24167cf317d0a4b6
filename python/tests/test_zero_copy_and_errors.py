"""Zero-copy invariants, error cases and the GIL."""

from __future__ import annotations

import gc
import sys
import threading
import time

import numpy as np
import pytest

import ztensor
from ztensor import (
    FormatError,
    Reader,
    Writer,
    ZTensorError,
    ZTensorFileNotFoundError,
)


class TestZeroCopy:
    def test_raw_reads_are_read_only_views_that_outlive_the_reader(self) -> None:
        arr = np.arange(4096, dtype=np.float32).reshape(64, 64)
        with Writer("z.zt") as w:
            w.add_tensor("t", arr)
        reader = Reader("z.zt")
        view = reader["t"]
        assert not view.flags.writeable
        assert not view.flags.owndata and view.base is not None
        with pytest.raises(ValueError):
            view[0, 0] = 1.0
        reader.close()
        del reader
        gc.collect()
        np.testing.assert_array_equal(view, arr)  # the mapping is still alive

    def test_copy_gives_a_writable_array(self) -> None:
        with Writer("z.zt") as w:
            w.add_tensor("t", np.ones(8))
        with Reader("z.zt") as r:
            c = r.read_tensor("t", copy=True)
        assert c.flags.writeable
        c[0] = 5

    def test_compressed_reads_are_owned(self) -> None:
        with Writer("z.zt") as w:
            w.add_tensor("t", np.ones(1000), compress=True)
        with Reader("z.zt") as r:
            assert r["t"].flags.writeable


class TestErrors:
    def test_missing_file(self) -> None:
        with pytest.raises(ZTensorFileNotFoundError) as e:
            Reader("nope.zt")
        assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ZTensorError)

    def test_corrupt_file_names_the_rule(self) -> None:
        with Writer("c.zt") as w:
            w.add_tensor("t", np.ones(8))
        data = bytearray(open("c.zt", "rb").read())
        data[-1] ^= 0xFF
        open("bad.zt", "wb").write(bytes(data))
        with pytest.raises(FormatError) as e:
            Reader("bad.zt")
        assert e.value.rule == "footer-magic"
        assert "footer-magic" in str(e.value)
        data = bytearray(open("c.zt", "rb").read())
        data[4096] ^= 1  # first data byte
        with Reader.from_bytes(bytes(data)) as r:
            with pytest.raises(ztensor.ChecksumError) as e2:
                r.verify()
        assert e2.value.rule == "digest-mismatch"

    def test_unknown_name_is_a_key_error(self) -> None:
        with Writer("k.zt") as w:
            w.add_tensor("t", np.ones(1))
        with Reader("k.zt") as r:
            with pytest.raises(KeyError):
                r["missing"]
            assert "missing" not in r

    def test_duplicate_name_and_bad_dtype(self) -> None:
        with Writer("d.zt") as w:
            w.add_tensor("t", np.ones(1))
            with pytest.raises(ZTensorError):
                w.add_tensor("t", np.ones(1))
            with pytest.raises(ZTensorError):
                w.add_tensor("s", np.array(["text"]))
            with pytest.raises(ZTensorError):
                w.add_tensor("c", np.ones(1), compress=23)

    def test_failed_block_leaves_target_untouched(self) -> None:
        with Writer("keep.zt") as w:
            w.add_tensor("old", np.ones(3))
        before = open("keep.zt", "rb").read()
        with pytest.raises(RuntimeError):
            with Writer("keep.zt") as w:
                w.add_tensor("new", np.zeros(3))
                raise RuntimeError("boom")
        assert open("keep.zt", "rb").read() == before

    def test_bf16_without_ml_dtypes_says_what_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ml_dtypes = pytest.importorskip("ml_dtypes")
        with Writer("b.zt") as w:
            w.add_tensor("b", np.ones(3, dtype=ml_dtypes.bfloat16))
        monkeypatch.setitem(sys.modules, "ml_dtypes", None)
        with Reader("b.zt") as r:
            with pytest.raises(ztensor.UnsupportedError, match="pip install ml_dtypes"):
                r["b"]


class TestGil:
    def test_decoding_releases_the_gil(self) -> None:
        rng = np.random.default_rng(1)
        big = (rng.integers(0, 4, 24_000_000) * 1.0).astype(np.float32)
        with Writer("big.zt") as w:
            w.add_tensor("t", big, compress=1)
        r = Reader("big.zt")
        done = threading.Event()
        calls: list[tuple[float, float]] = []
        ticks: list[float] = []

        def work() -> None:
            for _ in range(3):
                start = time.perf_counter()
                r.verify()
                calls.append((start, time.perf_counter()))
            done.set()

        t = threading.Thread(target=work)
        t.start()
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)
        t.join()
        # With the GIL held during a decode, this thread could not tick at
        # all inside a call; released, it ticks about once a millisecond.
        # Counting ticks inside each call (not ticks per second) keeps the
        # check independent of how loaded the machine is.
        for start, end in calls:
            assert end - start > 0.02, (start, end)
            inside = sum(1 for x in ticks if start < x < end)
            assert inside >= 10, (inside, end - start)

    def test_threads_read_different_files(self) -> None:
        arrays = {f"f{i}.zt": np.full(500_000, i, dtype=np.float32) for i in range(4)}
        for path, arr in arrays.items():
            with Writer(path) as w:
                w.add_tensor("t", arr, compress=True)
        results: dict[str, float] = {}

        def read(path: str) -> None:
            with Reader(path) as r:
                results[path] = float(r["t"][0])

        threads = [threading.Thread(target=read, args=(p,)) for p in arrays]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {p: float(a[0]) for p, a in arrays.items()}
