"""Interop in one run: our files in upstream ztensor 2.1.2 (its own venv,
`ZT_INTEROP_PYTHON`) and the reverse; and ztensor.torch against safetensors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ztensor import Reader, Writer

ml_dtypes = pytest.importorskip("ml_dtypes")

UPSTREAM = os.environ.get("ZT_INTEROP_PYTHON")
REQUIRED = os.environ.get("ZT_REQUIRE_INTEROP") == "1"
SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "interop" / "upstream_interop.py"

needs_upstream = pytest.mark.skipif(
    UPSTREAM is None and not REQUIRED,
    reason="set ZT_INTEROP_PYTHON to a venv with ztensor==2.1.2",
)

DUMP = r"""
import json, sys, ztensor
out = {}
src = ztensor.open(sys.argv[1])
for name in src.keys():
    t = src[name]
    parts = {}
    for p in t.parts:
        part = t if t.parts == ["data"] else t[p]
        parts[p] = {"dtype": part.dtype, "logical": part.logical, "hex": part.tobytes().hex()}
    out[name] = {"layout": t.layout, "shape": list(t.shape), "parts": parts}
checked, undigested = src.verify(deep=True)
print(json.dumps({"objects": out, "checked": checked, "attributes": src.attributes}))
"""


def upstream_dump(path: str) -> dict:
    assert UPSTREAM, "ZT_INTEROP_PYTHON is required"
    res = subprocess.run([UPSTREAM, "-c", DUMP, path], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@needs_upstream
class TestUpstreamInterop:
    def test_our_python_files_open_in_upstream(self) -> None:
        rng = np.random.default_rng(3)
        tensors = {
            "f32": rng.standard_normal((4, 5)).astype(np.float32),
            "f16": rng.standard_normal(7).astype(np.float16),
            "bf16": rng.standard_normal(6).astype(ml_dtypes.bfloat16),
            "i64": rng.integers(-99, 99, 5),
            "u8": rng.integers(0, 255, 9).astype(np.uint8),
            "mask": rng.integers(0, 2, 8).astype(np.bool_),
            "c64": (rng.standard_normal(3) + 1j).astype(np.complex64),
        }
        with Writer("ours.zt", metadata={"source": "ztensor-python", "n": 7}) as w:
            for name, arr in tensors.items():
                w.add_tensor(name, arr)
                w.add_tensor(name + "_z", arr, compress=True, checksum="sha256")
            w.add_sparse_csr("csr", np.array([1.0, 2.0], np.float32), [1, 0], [0, 1, 2], (2, 2))
            w.add_sparse_coo("coo", np.array([3.0], np.float64), [[1], [0]], (2, 2))
        dump = upstream_dump("ours.zt")
        objects = dump["objects"]
        assert dump["attributes"] == {"source": "ztensor-python", "n": 7}
        assert dump["checked"] == 2 * len(tensors) + 5
        for name, arr in tensors.items():
            for n in (name, name + "_z"):
                o = objects[n]
                assert o["layout"] == "dense" and o["shape"] == list(arr.shape)
                assert bytes.fromhex(o["parts"]["data"]["hex"]) == arr.tobytes(), n
        assert objects["mask"]["parts"]["data"]["logical"] == "bool"
        assert objects["bf16"]["parts"]["data"]["dtype"] == "bf16"
        assert objects["c64"]["parts"]["data"]["logical"] == "complex64"
        csr = objects["csr"]
        assert csr["layout"] == "zt.sparse_csr/1"
        assert np.frombuffer(bytes.fromhex(csr["parts"]["indptr"]["hex"]), np.uint32).tolist() == [
            0,
            1,
            2,
        ]
        coo = objects["coo"]["parts"]["coords"]
        assert np.frombuffer(bytes.fromhex(coo["hex"]), np.uint32).tolist() == [1, 0]

    def test_upstream_files_open_in_ours(self, tmp_path: Path) -> None:
        assert UPSTREAM
        res = subprocess.run(
            [UPSTREAM, str(SCRIPT), "write", str(tmp_path)],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr
        rows = (tmp_path / "expected.tsv").read_text().splitlines()
        assert len(rows) > 30
        for row in rows:
            file, obj, layout, shape, role, dtype, logical, hexdata = row.split("\t")
            with Reader(tmp_path / file) as r:
                info = r._native_reader().object(obj)
                assert info["layout"] == layout
                assert list(info["shape"]) == [int(d) for d in shape.split(",") if d]
                got = r._native_reader().part(obj, role).tobytes()
                assert got == bytes.fromhex(hexdata), (file, obj, role)
                if layout == "dense" and logical in ("-", "bool", "complex64"):
                    arr = r[obj]
                    assert arr.tobytes() == bytes.fromhex(hexdata)
        with Reader(tmp_path / "up-sparse.zt") as r:
            np.testing.assert_array_equal(
                r["csr"].toarray(), [[1, 0, 0, 2], [0, 3, 0, 0], [0, 0, 4, 0]]
            )
        with Reader(tmp_path / "up-attrs.zt") as r:
            assert r.attributes["name"] == "upstream"


class TestSafetensors:
    def test_same_dict_loads_equal(self) -> None:
        torch = pytest.importorskip("torch")
        st = pytest.importorskip("safetensors.torch")
        import ztensor.torch as zt

        tensors = {
            "w": torch.randn(64, 32),
            "b": torch.zeros(32, dtype=torch.float16),
            "e": torch.randn(10, 4).to(torch.bfloat16),
            "i": torch.arange(12, dtype=torch.int64).reshape(3, 4),
            "m": torch.tensor([True, False, True]),
        }
        zt.save_file(tensors, "a.zt", metadata={"format": "pt"})
        st.save_file(tensors, "a.safetensors", metadata={"format": "pt"})
        ours = zt.load_file("a.zt")
        theirs = st.load_file("a.safetensors")
        assert ours.keys() == theirs.keys()
        for k in tensors:
            assert ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]), k
        assert Reader("a.zt").attributes == {"format": "pt"}
