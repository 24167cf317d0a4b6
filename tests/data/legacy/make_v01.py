"""Writes the ztensor 0.1 test file with the `ztensor==0.1.4` package and
records what that package reads back in v01_expected.json.

    python -m venv /tmp/venv-z01 && /tmp/venv-z01/bin/pip install ztensor==0.1.4 numpy
    /tmp/venv-z01/bin/python make_v01.py
"""

import json

import numpy as np
import ztensor

arrays = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "i16": np.array([-1, 2, -3], dtype=np.int16),
    "u8": np.arange(5, dtype=np.uint8),
    "f64s": np.array([2.25]),
}
with ztensor.Writer("v01.zt") as w:
    for name, a in arrays.items():
        w.add_tensor(name, a)

# 0.1.4's reader returns views of freed memory, so the expectation is
# what was written; the file's metadata is checked against it here.
r = ztensor.Reader("v01.zt")
for m in r:
    assert list(m.shape) == list(arrays[m.name].shape), m.name
expected = {
    n: {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.ravel().tolist()}
    for n, a in arrays.items()
}
with open("v01_expected.json", "w") as f:
    json.dump({"v01.zt": expected}, f, indent=1, sort_keys=True)
print(expected)
