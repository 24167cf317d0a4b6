"""`ztensor.Tensor`, `TensorMeta` and `DType`.

Every example of the tensor and dtype sections of the API shape we follow
(shared seed 002, module `ztensor` in place of `quill`) runs verbatim, and
each documented value (`# [2, 3, 4]`, `# True`, ...) is checked; then the
same API over every element type of the format, and `.zt` round trips
through `Writer.add_tensor(tensor)` / `Reader.tensor(name)`.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ztensor
from ztensor import DType, Tensor, TensorMeta

ml_dtypes = pytest.importorskip("ml_dtypes")

# The seed's blocks, verbatim but for `quill` → `ztensor`.
CREATING = """
import ztensor
import numpy as np

# From NumPy array
arr = np.random.randn(2, 3, 4).astype(np.float32)
tensor = ztensor.Tensor.from_numpy(arr, name="input")

# Create zeros
zeros = ztensor.Tensor.zeros([1, 768], ztensor.DType.float32(), name="embedding")

# From raw bytes
data = bytes(24)  # 6 float32 zeros
tensor = ztensor.Tensor.from_bytes(data, [2, 3], ztensor.DType.float32())
"""

PROPERTIES = """
tensor = ztensor.Tensor.from_numpy(arr, name="input")

# Shape and dimensions
print(tensor.shape)       # [2, 3, 4]
print(tensor.ndim)        # 3
print(tensor.num_elements)  # 24

# Data type
print(tensor.dtype)       # DType.float32
print(tensor.size_bytes)  # 96

# Name
print(tensor.name)        # "input"

# Metadata object
meta = tensor.meta
"""

TO_NUMPY = """
# Get a copy of the data as NumPy array
result = tensor.to_numpy()

# Get raw bytes
raw = tensor.tobytes()
"""

TENSOR_META = """
# Create metadata
meta = ztensor.TensorMeta([1, 768], ztensor.DType.float32(), name="embedding")

print(meta.shape)        # [1, 768]
print(meta.dtype)        # DType.float32
print(meta.num_elements) # 768
print(meta.size_bytes)   # 3072
"""

TYPE_CHECKING = """
dtype = ztensor.DType.float32()

# Properties
print(dtype.element_size)  # 4
print(dtype.name)          # "float32"

# Type predicates
dtype.is_float()    # True
dtype.is_integer()  # False
dtype.is_signed()   # True

# Comparison
dtype == ztensor.DType.float32()  # True
"""

# The seed's tables: constructor → element size, NumPy dtype → DType.
SEED_TYPES = {
    "float32": 4,
    "float64": 8,
    "float16": 2,
    "bfloat16": 2,
    "int8": 1,
    "int32": 4,
    "int64": 8,
    "uint8": 1,
    "bool_": 1,
}
SEED_NUMPY = {
    np.float32: "float32",
    np.float64: "float64",
    np.float16: "float16",
    np.int8: "int8",
    np.int32: "int32",
    np.int64: "int64",
    np.uint8: "uint8",
    np.bool_: "bool_",
}

_DOC_LINE = re.compile(r"^(?P<code>.*?\S)\s*#\s*(?P<doc>.+)$")


def run_documented(block: str, namespace: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Runs a block, then re-evaluates each documented line.

    A line `print(x)  # v` must print `v` (quotes around text dropped); a
    line `expr  # v` must evaluate to the literal `v`.

    Args:
        block: The example's code.
        namespace: Globals shared by a document's blocks.

    Returns:
        (code, documented, actual) for each documented line.
    """
    source = textwrap.dedent(block)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<seed-002>", "exec"), namespace)
    checks = []
    for line in source.splitlines():
        m = _DOC_LINE.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        code, doc = m["code"], m["doc"].strip()
        if code.startswith("print(") and code.endswith(")"):
            actual = str(eval(code[len("print(") : -1], namespace))
            checks.append((code, doc.strip('"'), actual))
        else:
            try:
                expected = ast.literal_eval(doc)
            except (ValueError, SyntaxError):
                continue  # a prose comment, e.g. "# 6 float32 zeros"
            checks.append((code, repr(expected), repr(eval(code, namespace))))
    return checks


class TestSeedExamples:
    """Seed 002's tensor and dtype sections, run as written."""

    def test_tensor_blocks_run_and_print_the_documented_values(self) -> None:
        ns: dict[str, Any] = {}
        for block in (CREATING, PROPERTIES, TO_NUMPY, TENSOR_META):
            for code, doc, actual in run_documented(block, ns):
                assert actual == doc, code
        np.testing.assert_array_equal(ns["result"], ns["arr"])
        assert ns["raw"] == ns["arr"].tobytes()
        assert ns["zeros"].shape == [1, 768] and not ns["zeros"].to_numpy().any()

    def test_dtype_block_has_the_documented_values(self) -> None:
        ns: dict[str, Any] = {"ztensor": ztensor}
        checks = run_documented(TYPE_CHECKING, ns)
        assert len(checks) == 6
        for code, doc, actual in checks:
            assert actual == doc, code

    def test_dtype_table(self) -> None:
        for ctor, size in SEED_TYPES.items():
            assert getattr(DType, ctor)().element_size == size, ctor

    def test_numpy_table(self) -> None:
        for np_type, ctor in SEED_NUMPY.items():
            assert DType.from_numpy(np_type) == getattr(DType, ctor)()
            arr = np.zeros(3, dtype=np_type)
            assert Tensor.from_numpy(arr).dtype == getattr(DType, ctor)()


ALL = [d.name for d in DType.all()]


def sample(dtype: DType) -> np.ndarray:
    """A 2×3 array of `dtype` with distinct values (one negative if signed)."""
    values = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.float64)
    if dtype.is_signed():
        values[0, 1] = -1.5 if not dtype.is_integer() else -1
    if dtype.name == "bool":
        return values.astype(bool)
    if dtype.is_complex():
        return (values + 1j * values[::-1]).astype(dtype.to_numpy())
    if dtype.name == "float8_e8m0fnu":
        return np.array([[0.25, 1, 2], [4, 8, 16]], dtype=np.float32).astype(dtype.to_numpy())
    return values.astype(dtype.to_numpy())


class TestDTypes:
    """The same API over every element type."""

    def test_every_type_has_a_constructor_named_after_it(self) -> None:
        names = {d.name for d in DType.all()}
        assert names >= {"bfloat16", "float8_e4m3fn", "float8_e5m2", "complex64", "complex128"}
        for name in names:
            ctor = "bool_" if name == "bool" else name
            assert getattr(DType, ctor)() == DType(name)
            assert repr(DType(name)) == f"DType.{name}"

    @pytest.mark.parametrize("name", ALL)
    def test_element_size_matches_numpy(self, name: str) -> None:
        d = DType(name)
        assert d.element_size == d.to_numpy().itemsize
        assert DType.from_numpy(d.to_numpy()) == d

    def test_predicates(self) -> None:
        assert DType.bfloat16().is_float() and DType.bfloat16().is_signed()
        assert DType.float8_e4m3fn().is_float() and not DType.float8_e4m3fn().is_integer()
        assert not DType.float8_e8m0fnu().is_signed()
        assert DType.complex64().is_complex() and not DType.complex64().is_float()
        assert DType.complex128().is_signed()
        assert DType.uint16().is_integer() and not DType.uint16().is_signed()
        assert DType.int16().is_signed()
        assert not DType.bool_().is_integer() and not DType.bool_().is_float()
        assert not DType.bool_().is_signed()

    def test_names_and_hashing(self) -> None:
        assert DType("f32") == DType("float32") == DType.float32()
        assert DType.float32().core_name == "f32"
        assert len({DType.float32(), DType("float32"), DType.float16()}) == 2
        assert DType.float32() != DType.float64()
        assert DType.float32() != "float32"

    def test_unknown_names_are_refused(self) -> None:
        with pytest.raises(ValueError, match="not an element type"):
            DType("float33")
        # Not a string: a ValueError naming the argument, not `unhashable`.
        for bad in ([1], None, 5, {"float32"}):
            with pytest.raises(ztensor.ZTensorValueError, match="DType name must be a string"):
                DType(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unsupported NumPy dtype"):
            DType.from_numpy(np.dtype("U4"))


class TestTensor:
    """Tensors over every type, bad input, and `.zt` round trips."""

    def test_huge_shapes_are_refused_by_name(self) -> None:
        with pytest.raises(ValueError, match="elements"):
            Tensor.zeros([2**40, 2**40], "float32")
        with pytest.raises(MemoryError, match="bytes"):
            Tensor.zeros([2**31, 2**31], "uint8")

    @pytest.mark.parametrize("name", ALL)
    def test_numpy_round_trip(self, name: str) -> None:
        d = DType(name)
        arr = sample(d)
        t = Tensor.from_numpy(arr, name="x")
        assert t.dtype == d and t.shape == [2, 3] and t.size_bytes == 6 * d.element_size
        back = t.to_numpy()
        assert back.dtype == arr.dtype
        assert back.tobytes() == arr.tobytes()
        assert t.tobytes() == arr.tobytes()
        back[...] = back.flat[0]  # a writable copy: the tensor is unchanged
        assert t.tobytes() == arr.tobytes()
        assert Tensor.from_bytes(t.tobytes(), [3, 2], d).to_numpy().shape == (3, 2)

    def test_tobytes_does_not_copy(self) -> None:
        t = Tensor.from_numpy(np.arange(4, dtype=np.int32))
        assert t.tobytes() is t.tobytes()

    def test_from_numpy_copies_and_fixes_byte_order(self) -> None:
        arr = np.arange(6, dtype=">i4").reshape(2, 3)
        t = Tensor.from_numpy(arr[:, ::2])
        assert t.dtype == DType.int32()
        np.testing.assert_array_equal(t.to_numpy(), [[0, 2], [3, 5]])
        src = np.ones(3, np.float32)
        t = Tensor.from_numpy(src)
        src[0] = 7
        assert t.to_numpy()[0] == 1

    def test_scalars_and_empty_tensors(self) -> None:
        s = Tensor.from_numpy(np.float64(2.5))
        assert s.shape == [] and s.ndim == 0 and s.num_elements == 1
        assert s.to_numpy() == 2.5
        e = Tensor.zeros([0, 4], DType.float32())
        assert e.num_elements == 0 and e.tobytes() == b""

    def test_bad_input_names_the_field(self) -> None:
        with pytest.raises(ValueError, match=r"data has 23 bytes.*needs 24"):
            Tensor.from_bytes(bytes(23), [2, 3], DType.float32())
        with pytest.raises(ValueError, match=r"shape\[1\] = -3 is negative"):
            Tensor.zeros([2, -3], DType.float32())
        with pytest.raises(ValueError, match=r"shape\[0\] = 2.0 is not an integer"):
            TensorMeta([2.0], DType.float32())
        with pytest.raises(ValueError, match="shape must be a sequence"):
            TensorMeta(5, DType.float32())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="dtype must be"):
            TensorMeta([1], 4)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name must be"):
            Tensor.zeros([1], "float32", name=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="data must be bytes"):
            Tensor.from_bytes("abc", [3], DType.uint8())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unsupported NumPy dtype"):
            Tensor.from_numpy(np.array(["a"]))
        assert issubclass(ztensor.ZTensorValueError, ValueError)

    def test_constructor_checks_meta_and_data(self) -> None:
        meta = TensorMeta([2], "int8", name="t")
        with pytest.raises(ztensor.ZTensorValueError, match="data must be bytes.*not str"):
            Tensor(meta, "ab")  # type: ignore[arg-type]
        with pytest.raises(ztensor.ZTensorValueError, match="data must be bytes.*not list"):
            Tensor(meta, [1, 2])  # type: ignore[arg-type]
        with pytest.raises(ztensor.ZTensorValueError, match="meta must be a ztensor.TensorMeta"):
            Tensor([2], b"ab")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="data has 3 bytes.*needs 2"):
            Tensor(meta, b"abc")
        want = Tensor.from_bytes(b"\x01\xff", [2], "int8", name="t")
        assert Tensor(meta, bytearray(b"\x01\xff")) == want
        # A memoryview counts bytes, not its items.
        view = memoryview(np.array([0xFF01], "<u2").tobytes()).cast("H")
        assert Tensor(TensorMeta([2], "int8", name="t"), view) == want
        t = Tensor(meta, b"\x01\xff")
        assert t.to_numpy().tolist() == [1, -1]
        meta.name = "renamed"  # the tensor keeps its own metadata
        assert t.name == "t" and meta.name == "renamed"
        with pytest.raises(ztensor.ZTensorValueError, match="name must be a string or None"):
            meta.name = [1]  # type: ignore[assignment]
        with pytest.raises(ztensor.ZTensorValueError, match="is not a NumPy dtype"):
            DType.from_numpy([1])

    def test_meta_and_equality(self) -> None:
        t = Tensor.from_numpy(np.ones((2, 2), np.float16), name="w")
        assert t.meta == TensorMeta([2, 2], "float16", name="w")
        assert t.meta != TensorMeta([2, 2], "float16", name="v")
        assert t == Tensor.from_bytes(t.tobytes(), [2, 2], "float16", name="w")
        assert t != Tensor.zeros([2, 2], "float16", name="w")
        t.name = "renamed"
        assert t.name == "renamed" and t.meta.name == "renamed"
        assert np.asarray(t).dtype == np.float16

    @pytest.mark.parametrize("name", ALL)
    def test_zt_round_trip_by_tensor_name(self, tmp_path: Path, name: str) -> None:
        d = DType(name)
        t = Tensor.from_numpy(sample(d), name=f"t.{name}")
        path = tmp_path / "t.zt"
        with ztensor.Writer(path) as w:
            w.add_tensor(t)
            w.add_tensor("other", t, compress=True)
        with ztensor.Reader(path) as r:
            assert r.tensor(f"t.{name}") == t
            other = r.tensor("other")
            assert other.name == "other" and other.tobytes() == t.tobytes()
            assert r.metadata("other").dtype_str == name

    def test_reader_tensor_errors(self, tmp_path: Path) -> None:
        path = tmp_path / "s.zt"
        with ztensor.Writer(path) as w:
            w.add_sparse_coo("coo", np.ones(2, np.float32), [[0, 1]], [4])
        with ztensor.Reader(path) as r:
            with pytest.raises(ztensor.ZTensorKeyError):
                r.tensor("missing")
            with pytest.raises(
                ztensor.ZTensorValueError,
                match=r"'coo' is a sparse tensor \(sparse_coo\).*read_tensor",
            ):
                r.tensor("coo")

    def test_writer_refuses_unnamed_or_doubly_named_tensors(self, tmp_path: Path) -> None:
        with ztensor.Writer(tmp_path / "w.zt") as w:
            with pytest.raises(ValueError, match="has no name"):
                w.add_tensor(Tensor.zeros([1], "float32"))
            with pytest.raises(ValueError, match="takes the name from the Tensor"):
                w.add_tensor(Tensor.zeros([1], "float32", name="a"), np.ones(1))
            with pytest.raises(ValueError, match="no tensor data"):
                w.add_tensor("a")
            w.add_tensor("plain", np.ones(2, np.float32))
        with ztensor.Reader(tmp_path / "w.zt") as r:
            assert r.tensor_names == ["plain"]
