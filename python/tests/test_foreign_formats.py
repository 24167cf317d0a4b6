"""Foreign formats through `ztensor.open`, `ztensor.convert` and
`ztensor.export`, checked against the reference readers: the `gguf`
package (llama.cpp's own Python reader), `safetensors` and numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ztensor

gguf = pytest.importorskip("gguf")

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures"
GGUF_FILES = sorted((FIXTURES / "gguf").glob("*.gguf"))
NPZ = REPO / "tests" / "data" / "npz"
LEGACY = REPO / "tests" / "data" / "legacy"

# gguf.GGUFValueType -> the type names recorded in our attributes.
VALUE_TYPES = {
    gguf.GGUFValueType.UINT8: "u8",
    gguf.GGUFValueType.INT8: "i8",
    gguf.GGUFValueType.UINT16: "u16",
    gguf.GGUFValueType.INT16: "i16",
    gguf.GGUFValueType.UINT32: "u32",
    gguf.GGUFValueType.INT32: "i32",
    gguf.GGUFValueType.FLOAT32: "f32",
    gguf.GGUFValueType.BOOL: "bool",
    gguf.GGUFValueType.STRING: "string",
    gguf.GGUFValueType.UINT64: "u64",
    gguf.GGUFValueType.INT64: "i64",
    gguf.GGUFValueType.FLOAT64: "f64",
}


def reference_fields(path: Path) -> dict[str, tuple[str, Any]]:
    """Every metadata key with its type name and value, per `gguf`."""
    out: dict[str, tuple[str, Any]] = {}
    for name, field in gguf.GGUFReader(path).fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's own header pseudo-fields
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            kind = f"array[{VALUE_TYPES[field.types[1]]}]"
        else:
            kind = VALUE_TYPES[field.types[0]]
        out[name] = (kind, field.contents())
    return out


def reference_tensors(path: Path) -> list[tuple[str, str, list[int], int, bytes]]:
    """(name, ggml type, logical shape, absolute offset, bytes) in file order."""
    return [
        (
            t.name,
            t.tensor_type.name.lower(),
            [int(d) for d in reversed(t.shape)],
            int(t.data_offset),
            t.data.tobytes(),
        )
        for t in gguf.GGUFReader(path).tensors
    ]


def our_tensors(r: ztensor.Reader) -> list[tuple[str, str, list[int], int, bytes]]:
    order = r.attributes["gguf"]["tensors"]
    out = []
    for name in order:
        obj = r._native_reader().object(name)
        part = obj["parts"]["data"]
        layout = obj["layout"]
        kind = layout[len("gguf.") : -len("/1")] if layout.startswith("gguf.") else part["dtype"]
        data = r._native_reader().part(name, "data").tobytes()
        out.append((name, kind, list(obj["shape"]), part["offset"], data))
    return out


class TestGguf:
    """GGUF read, convert, export and quantized types, against the gguf package."""

    @pytest.mark.parametrize("path", GGUF_FILES, ids=[p.stem for p in GGUF_FILES])
    def test_gguf_reader_agrees_with_the_gguf_package(self, path: Path) -> None:
        r = ztensor.open(path)
        assert r.format == "gguf"
        attrs = r.attributes
        ref = reference_fields(path)
        assert attrs["gguf"]["keys"] == list(ref)
        for key, (kind, value) in ref.items():
            assert attrs["gguf"]["types"][key] == kind, key
            assert attrs[key] == value, key
        assert our_tensors(r) == reference_tensors(path)

    @pytest.mark.parametrize("path", GGUF_FILES, ids=[p.stem for p in GGUF_FILES])
    def test_convert_then_export_rebuilds_the_gguf(self, path: Path, tmp_path: Path) -> None:
        report = ztensor.convert(path, tmp_path / "m.zt")
        assert report["format"] == "gguf"
        ztensor.export(tmp_path / "m.zt", tmp_path / "m.gguf")
        back = tmp_path / "m.gguf"
        assert reference_fields(back) == reference_fields(path)
        ours = [(n, t, s, b) for n, t, s, _, b in reference_tensors(back)]
        assert ours == [(n, t, s, b) for n, t, s, _, b in reference_tensors(path)]
        assert back.read_bytes() == path.read_bytes()

    @pytest.mark.parametrize("kind", ["q4_0", "q4_k_m"])
    def test_dense_reads_of_quantized_blocks_say_what_reads_them(self, kind: str) -> None:
        path = FIXTURES / "gguf" / f"llama-k-{kind}.gguf"
        name = "blk.0.attn_q.weight"
        block = {"q4_k_m": "q4_k"}.get(kind, kind)
        with ztensor.Reader(path) as r:
            meta = r.metadata(name)
            assert meta.layout == f"gguf.{block}/1"
            want = rf"{name!r} holds GGUF {block} quantized blocks.*ztensor\.engine\.dequantize"
            with pytest.raises(ztensor.UnsupportedError, match=f"{want}") as e:
                r.tensor(name)
            assert "Reader.tensor reads dense tensors" in str(e.value)
            assert "sparse" not in str(e.value)
            with pytest.raises(ztensor.UnsupportedError, match=want):
                r.read_tensor(name)
            # The advice works: the blocks decode to the gguf package's values.
            ours = ztensor.engine.dequantize(r, name)
        ref = next(t for t in gguf.GGUFReader(path).tensors if t.name == name)
        theirs = gguf.quants.dequantize(ref.data, ref.tensor_type)
        assert ours.shape == tuple(meta.shape) == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

    def test_gguf_writer_files_with_quantized_types(self, tmp_path: Path) -> None:
        """Files written by `gguf.GGUFWriter`, incl. quantized blocks it makes."""
        from gguf.quants import quantize

        path = tmp_path / "w.gguf"
        w = gguf.GGUFWriter(path, "llama")
        w.add_uint32("test.u32", 7)
        w.add_int8("test.i8", -3)
        w.add_float64("test.f64", 0.1)
        w.add_bool("test.flag", True)
        w.add_array("test.names", ["a", "bc", ""])
        w.add_array("test.ints", [1, 2, 3])
        rng = np.random.default_rng(0)
        w.add_tensor("dense", rng.standard_normal((4, 64), dtype=np.float32))
        w.add_tensor("ints", np.arange(6, dtype=np.int32).reshape(2, 3))
        for qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0):
            data = rng.standard_normal((2, 64), dtype=np.float32)
            w.add_tensor(f"q_{qtype.name}", quantize(data, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

        r = ztensor.open(path)
        assert our_tensors(r) == reference_tensors(path)
        ref = reference_fields(path)
        assert {k: r.attributes[k] for k in ref} == {k: v for k, (_, v) in ref.items()}
        assert r.metadata("q_Q8_0").layout == "gguf.q8_0/1"
        ztensor.convert(path, tmp_path / "w.zt")
        ztensor.export(tmp_path / "w.zt", tmp_path / "back.gguf")
        assert (tmp_path / "back.gguf").read_bytes() == path.read_bytes()


class TestOtherFormats:
    """npz, npy and legacy ztensor files."""

    def test_npz_and_npy_open_like_numpy(self) -> None:
        for name in ("stored.npz", "deflated.npz"):
            want = np.load(NPZ / name)
            with ztensor.open(NPZ / name) as r:
                assert r.format == "npz"
                assert sorted(r.keys()) == sorted(want.files)
                for key in want.files:
                    np.testing.assert_array_equal(r[key], want[key])
                    assert r[key].dtype == want[key].dtype
        np.testing.assert_array_equal(
            ztensor.open(NPZ / "one.npy")["array"], np.load(NPZ / "one.npy")
        )

    def test_refused_npy_files_raise_format_errors(self) -> None:
        for name, rule in [
            ("object.npy", "npy-descr"),
            ("big_endian.npy", "npy-descr"),
            ("fortran.npy", "npy-fortran"),
        ]:
            with pytest.raises(ztensor.FormatError) as e:
                ztensor.open(NPZ / name)
            assert e.value.rule == rule

    def test_legacy_files_open_and_convert(self, tmp_path: Path) -> None:
        r = ztensor.open(LEGACY / "v1_raw.zt")
        assert r.format == "ztensor-1"
        np.testing.assert_array_equal(r["ids"], np.arange(-5, 5, dtype=np.int32))
        assert r.read_tensor("csr", to="numpy") is not None
        assert ztensor.open(LEGACY / "v01.zt").format == "ztensor-0.1"
        report = ztensor.convert(LEGACY / "v1_mixed.zt", tmp_path / "m.zt", compress=True)
        assert report["format"] == "ztensor-1"
        with ztensor.Reader(tmp_path / "m.zt") as z:
            np.testing.assert_array_equal(z["u8"], np.arange(7, dtype=np.uint8))


class TestExport:
    """Exports other readers open, or a refusal before any file exists."""

    def test_export_to_safetensors_loads_in_safetensors(self, tmp_path: Path) -> None:
        st_numpy = pytest.importorskip("safetensors.numpy")
        ztensor.export(NPZ / "stored.npz", tmp_path / "a.safetensors")
        got = st_numpy.load_file(tmp_path / "a.safetensors")
        want = np.load(NPZ / "stored.npz")
        assert sorted(got) == sorted(want.files)
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key])
        # And the safetensors file opens through ztensor.open too.
        with ztensor.open(tmp_path / "a.safetensors") as r:
            assert r.format == "safetensors"
            np.testing.assert_array_equal(r["weight"], want["weight"])

    def test_names_the_target_cannot_hold_are_refused(self, tmp_path: Path) -> None:
        """Issue 11 items 2 and 3: `__metadata__` in safetensors, a name over
        63 bytes in GGUF; no output file appears."""
        with ztensor.Writer(tmp_path / "m.zt", metadata={"format": "pt"}) as w:
            w.add_tensor("__metadata__", np.zeros(2, np.float32))
            w.add_tensor("blk.0." + "x" * 76, np.zeros(2, np.float32))
        for out in ("m.safetensors", "m.gguf"):
            with pytest.raises(ztensor.UnsupportedError):
                ztensor.export(tmp_path / "m.zt", tmp_path / out)
            assert not (tmp_path / out).exists()


class TestSplitGgufExport:
    """`ztensor.export(..., max_shard_size=...)` writes a split GGUF set."""

    def test_each_shard_reads_with_the_gguf_package_and_the_set_equals_the_file(
        self, tmp_path: Path
    ) -> None:
        src = FIXTURES / "gguf" / "llama-tiny-q8_0.gguf"
        ztensor.convert(src, tmp_path / "m.zt")
        report = ztensor.export(tmp_path / "m.zt", tmp_path / "s.gguf", max_shard_size=65536)
        n = report["files"]
        assert n > 1
        shards = sorted(tmp_path.glob("s-*-of-*.gguf"))
        assert [p.name for p in shards] == [f"s-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
        whole = reference_fields(src)
        names: list[str] = []
        for i, shard in enumerate(shards):
            fields = reference_fields(shard)
            assert fields["split.no"] == ("u16", i)
            assert fields["split.count"] == ("u16", n)
            assert fields["split.tensors.count"] == ("i32", len(reference_tensors(src)))
            rest = {k: v for k, v in fields.items() if not k.startswith("split.")}
            assert rest == (whole if i == 0 else {})
            names += [t[0] for t in reference_tensors(shard)]
        want = reference_tensors(src)
        assert names == [t[0] for t in want]
        got = {t[0]: t[4] for s in shards for t in reference_tensors(s)}
        assert got == {t[0]: t[4] for t in want}
        # Our reader opens the set from any shard as the original model.
        orig = ztensor.open(src)
        for shard in (shards[0], shards[-1]):
            r = ztensor.open(shard)
            assert {k: v for k, v in r.attributes.items() if k != "gguf"} == {
                k: v for k, v in orig.attributes.items() if k != "gguf"
            }
            assert our_tensors(r) != [] and [t[4] for t in our_tensors(r)] == [
                t[4] for t in our_tensors(orig)
            ]

    def test_bad_max_shard_size_is_refused(self, tmp_path: Path) -> None:
        src = FIXTURES / "gguf" / "llama-tiny-q8_0.gguf"
        with pytest.raises(ztensor.ZTensorValueError, match="minimum"):
            ztensor.export(src, tmp_path / "s.gguf", max_shard_size=100)
        with pytest.raises(ztensor.ZTensorValueError, match="split GGUF"):
            ztensor.export(src, tmp_path / "s.safetensors", max_shard_size=1 << 20)
        with pytest.raises(OverflowError):
            ztensor.export(src, tmp_path / "s.gguf", max_shard_size=-1)
        assert list(tmp_path.iterdir()) == []
