"""Round trips over dtype × layout × encoding × framework."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ztensor import Reader, UnsupportedError, Writer
from ztensor import numpy as ztnp

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
scipy = pytest.importorskip("scipy")
pytest.importorskip("scipy.sparse")

NUMPY_DTYPES: list[Any] = [
    np.float64,
    np.float32,
    np.float16,
    ml_dtypes.bfloat16,
    np.int64,
    np.int32,
    np.int16,
    np.int8,
    np.uint64,
    np.uint32,
    np.uint16,
    np.uint8,
    np.bool_,
    np.complex64,
    np.complex128,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
]

TORCH_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


def sample(dtype: Any, shape: tuple[int, ...] = (3, 5)) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


class TestDense:
    @pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
    @pytest.mark.parametrize("compress", [False, True, 19])
    def test_numpy(self, dtype: Any, compress: bool | int) -> None:
        arr = sample(dtype)
        with Writer("t.zt") as w:
            w.add_tensor("t", arr, compress=compress)
            w.add_tensor("scalar", np.array(7, dtype=np.int32))
            w.add_tensor("empty", np.zeros((0, 4), dtype=np.float32))
        with Reader("t.zt") as r:
            got = r["t"]
            assert got.dtype == np.dtype(dtype)
            assert got.shape == arr.shape
            assert got.tobytes() == arr.tobytes()
            assert r.metadata("t").encoding == ("zstd" if compress else "raw")
            assert r["scalar"].shape == () and r["scalar"] == 7
            assert r["empty"].shape == (0, 4)
            r.verify()

    @pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
    @pytest.mark.parametrize("compress", [False, 3])
    def test_torch(self, dtype: Any, compress: int | bool) -> None:
        t = (torch.randn(4, 6) * 10).to(dtype)
        with Writer("t.zt") as w:
            w.add_tensor("t", t, compress=compress)
            w.add_tensor("view", t[:, 1:3])  # non-contiguous input
        with Reader("t.zt") as r:
            got = r.read_tensor("t", to="torch")
            assert got.dtype == dtype and torch.equal(got, t)
            assert torch.equal(r.read_tensor("view", to="torch"), t[:, 1:3])


class TestSparse:
    @pytest.mark.parametrize(
        "dtype", [np.float32, np.float64, np.int64, np.int8, ml_dtypes.bfloat16]
    )
    @pytest.mark.parametrize("compress", [False, True])
    def test_csr_and_coo(self, dtype: Any, compress: bool) -> None:
        dense = sample(np.float32, (6, 9))
        dense[np.abs(dense) < 0.8] = 0
        dense = dense.astype(dtype)
        csr = scipy.sparse.csr_matrix(dense.astype(np.float64))
        coo = csr.tocoo()
        values = csr.data.astype(dtype)
        with Writer("s.zt") as w:
            w.add_sparse_csr("csr", values, csr.indices, csr.indptr, csr.shape, compress=compress)
            w.add_sparse_coo(
                "coo",
                coo.data.astype(dtype),
                np.vstack([coo.row, coo.col]),
                coo.shape,
                compress,
            )
        with Reader("s.zt") as r:
            assert r.metadata("csr").layout == "sparse_csr"
            assert r.metadata("coo").layout == "sparse_coo"
            tc = r.read_tensor("csr", to="torch")
            assert tc.layout == torch.sparse_csr
            to = r.read_tensor("coo", to="torch")
            assert to.layout == torch.sparse_coo
            expect = torch.from_numpy(dense.astype(np.float32))
            assert torch.equal(tc.to_dense().float(), expect)
            assert torch.equal(to.to_dense().float(), expect)
            if dtype is ml_dtypes.bfloat16:  # scipy.sparse has no bfloat16
                with pytest.raises(UnsupportedError, match="to='torch'"):
                    r.read_tensor("csr")
                return
            got = r.read_tensor("csr")
            assert isinstance(got, scipy.sparse.csr_matrix)
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(
                got.astype(np.float64).toarray(), dense.astype(np.float64)
            )
            got_coo = r.read_tensor("coo")
            assert isinstance(got_coo, scipy.sparse.coo_matrix)
            np.testing.assert_array_equal(
                got_coo.astype(np.float64).toarray(), dense.astype(np.float64)
            )

    def test_coo_rank3(self) -> None:
        idx = np.array([[0, 1], [2, 0], [1, 3]])
        with Writer("c.zt") as w:
            w.add_sparse_coo("t", np.array([1.0, 2.0]), idx, (2, 3, 4))
        with Reader("c.zt") as r:
            t = r.read_tensor("t", to="torch").to_dense()
            assert t[0, 2, 1] == 1.0 and t[1, 0, 3] == 2.0


class TestFileFeatures:
    def test_metadata_and_checksums(self) -> None:
        meta = {
            "model": "tiny",
            "layers": 2,
            "scale": 0.5,
            "tags": ["a", "b"],
            "nested": {"k": None},
        }
        with Writer("m.zt", metadata=meta) as w:
            for alg in ["xxh3", "crc32c", "blake3", "sha256", None]:
                w.add_tensor(f"t_{alg}", np.arange(10), checksum=alg, metadata={"alg": str(alg)})
        with Reader("m.zt") as r:
            assert r.attributes == meta
            assert r.metadata("t_crc32c").checksum.startswith("crc32c:")
            assert r.metadata("t_None").checksum is None
            assert r.metadata("t_blake3").attributes == {"alg": "blake3"}
            assert r.verify()["digests_checked"] == 4

    def test_append(self) -> None:
        with Writer("a.zt") as w:
            w.add_tensor("first", np.arange(3))
        with Writer("a.zt", append=True) as w:
            w.add_tensor("second", np.ones(2))
        with Reader("a.zt") as r:
            assert r.tensor_names == ["first", "second"]

    def test_get_slice(self) -> None:
        arr = np.arange(200 * 64, dtype=np.float32).reshape(200, 64)
        with Writer("s.zt") as w:
            w.add_tensor("raw", arr)
            w.add_tensor("z", arr, compress=True)
        with Reader("s.zt") as r:
            for name in ("raw", "z"):
                sl = r.get_slice(name)
                np.testing.assert_array_equal(sl[10:20], arr[10:20])
                np.testing.assert_array_equal(sl[-1], arr[-1])
                np.testing.assert_array_equal(sl[5:50:7], arr[5:50:7])

    def test_numpy_helpers(self) -> None:
        tensors = {"a": np.arange(6).reshape(2, 3), "b": np.ones(4, dtype=np.float16)}
        ztnp.save_file(tensors, "n.zt", metadata={"k": "v"})
        loaded = ztnp.load_file("n.zt")
        for k, v in tensors.items():
            np.testing.assert_array_equal(loaded[k], v)
        blob = ztnp.save(tensors)
        for k, v in ztnp.load(blob).items():
            np.testing.assert_array_equal(v, tensors[k])

    def test_canonical_is_reproducible(self) -> None:
        for path in ("c1.zt", "c2.zt"):
            with Writer(path, canonical=True) as w:
                w.add_tensor("a", np.arange(5))
                w.add_tensor("b", np.arange(5))
        assert open("c1.zt", "rb").read() == open("c2.zt", "rb").read()


class TestTorchHelpers:
    def test_tied_weights_are_stored_once_and_retied(self) -> None:
        from ztensor.torch import load_file, load_model, save_file, save_model

        class Tied(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = torch.nn.Embedding(50, 16)
                self.head = torch.nn.Linear(16, 50, bias=False)
                self.head.weight = self.embed.weight

        model = Tied()
        save_model(model, "tied.zt")
        with Reader("tied.zt") as r:
            a, b = r.metadata("embed.weight"), r.metadata("head.weight")
            assert a.offset == b.offset  # one blob, two names
        state = load_file("tied.zt")
        assert state["embed.weight"] is state["head.weight"]
        fresh = Tied()
        assert load_model(fresh, "tied.zt") == ([], [])
        assert fresh.head.weight is fresh.embed.weight
        assert torch.equal(fresh.embed.weight, model.embed.weight)

        x = torch.randn(3, 3)
        save_file({"x": x, "same": x}, "shared.zt")
        loaded = load_file("shared.zt")
        assert loaded["x"] is loaded["same"]

    def test_canonical_dedup_does_not_tie_different_tensors(self) -> None:
        """Issue 11 item 1: equal bytes stored once are not tied weights."""
        from ztensor.torch import load, load_file, load_model

        with Writer("c.zt", canonical=True) as w:
            w.add_tensor("a", np.zeros(4, np.float32))
            w.add_tensor("b", np.zeros(4, np.int32))
            w.add_tensor("c", np.zeros((2, 2), np.float32))
            w.add_tensor("d", np.zeros(4, np.float32))
        with Reader("c.zt") as r:
            assert len({r.metadata(n).offset for n in "abcd"}) == 1  # one blob
            assert all(r.metadata(n).alias_of is None for n in "abcd")
        with open("c.zt", "rb") as f:
            data = f.read()
        for state in (load_file("c.zt"), load(data)):
            assert (state["a"].dtype, tuple(state["a"].shape)) == (torch.float32, (4,))
            assert (state["b"].dtype, tuple(state["b"].shape)) == (torch.int32, (4,))
            assert (state["c"].dtype, tuple(state["c"].shape)) == (torch.float32, (2, 2))
            assert (state["d"].dtype, tuple(state["d"].shape)) == (torch.float32, (4,))
            state["a"][0] = 1.0
            state["b"][1] = 7
            assert state["d"].tolist() == [0.0] * 4
            assert state["c"].tolist() == [[0.0, 0.0], [0.0, 0.0]]
            assert state["b"].tolist() == [0, 7, 0, 0]
        with open("c.zt", "rb") as f:
            assert f.read() == data  # copy-on-write: the file is untouched

        class Two(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.a = torch.nn.Parameter(torch.ones(4))
                self.d = torch.nn.Parameter(torch.ones(4))

        with Writer("m.zt", canonical=True) as w:
            w.add_tensor("a", np.zeros(4, np.float32))
            w.add_tensor("d", np.zeros(4, np.float32))
        model = Two()
        assert load_model(model, "m.zt") == ([], [])
        assert model.a.data_ptr() != model.d.data_ptr()

    def test_declared_alias_ties_only_equal_dtype_and_shape(self) -> None:
        from ztensor.torch import load_file

        with Writer("a.zt") as w:
            w.add_tensor("w", np.arange(4, dtype=np.float32))
            w.add_alias("tied", "w")
            w.add_alias("tied2", "tied")
        with Reader("a.zt") as r:
            assert r.metadata("tied").alias_of == "w"
            assert r.metadata("tied2").alias_of == "w"
            assert r.metadata("w").alias_of is None
        state = load_file("a.zt")
        assert state["tied"] is state["w"] and state["tied2"] is state["w"]

    def test_strict_load_model(self) -> None:
        from ztensor.torch import load_model, save_file

        save_file({"weight": torch.zeros(2, 2), "extra": torch.zeros(1)}, "m.zt")
        model = torch.nn.Linear(2, 2)
        with pytest.raises(RuntimeError):
            load_model(model, "m.zt")
        missing, unexpected = load_model(model, "m.zt", strict=False)
        assert missing == ["bias"] and unexpected == ["extra"]
