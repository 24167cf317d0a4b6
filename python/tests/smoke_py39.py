"""Smoke test for the lowest declared Python (3.9): every module imports,
and a file written, read, converted and exported round-trips.

Run directly (`python tests/smoke_py39.py`); the test tools of the full
suite need a newer Python.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import ztensor
import ztensor.engine
import ztensor.numpy
import ztensor.snapshot
import ztensor.torch  # noqa: F401 - imports without torch installed


def main() -> None:
    """Writes, reads, converts and exports a small file; raises on a mismatch."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.zt")
        arrays = {
            "f": np.arange(6, dtype=np.float32).reshape(2, 3),
            "i": np.arange(5, dtype=np.int64),
            "b": np.array([True, False]),
        }
        with ztensor.Writer(path) as w:
            for name, arr in arrays.items():
                w.add_tensor(name, arr, compress=name == "i")
            w.add_alias("g", "f")
        with ztensor.Reader(path) as r:
            for name, arr in arrays.items():
                np.testing.assert_array_equal(r.read_tensor(name), arr)
            assert r.metadata("g").alias_of == "f"
        loaded = ztensor.numpy.load_file(path, copy=True)
        np.testing.assert_array_equal(loaded["g"], arrays["f"])
        st = os.path.join(d, "s.safetensors")
        ztensor.export(path, st)
        back = os.path.join(d, "back.zt")
        ztensor.convert(st, back)
        with ztensor.open(back) as r:
            np.testing.assert_array_equal(r.read_tensor("f"), arrays["f"])
    print(f"python {sys.version.split()[0]}: ztensor smoke test passed")


if __name__ == "__main__":
    main()
