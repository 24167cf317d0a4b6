"""Writes the npy/npz test files with numpy and records the arrays in
expected.json (run with any numpy >= 1.20: `python make_npz.py`)."""

import json

import numpy as np

arrays = {
    "weight": (np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 3),
    "half": np.linspace(-2, 2, 7).astype(np.float16),
    "mask": np.array([[True, False], [False, True]]),
    "ids": np.array([-7, 0, 7], dtype=np.int64),
    "scalar": np.array(42, dtype=np.uint32),
    "empty": np.zeros((0, 5), dtype=np.int8),
    "cplx": np.array([1 + 2j, -3.5j], dtype=np.complex64),
}
np.savez("stored.npz", **arrays)
np.savez_compressed("deflated.npz", **arrays)
np.save("one.npy", arrays["weight"])
# Upstream ztensor 2.1.2 converts npz but has no complex type: the interop
# test compares conversions of these two.
plain = {n: a for n, a in arrays.items() if n != "cplx"}
np.savez("interop.npz", **plain)
np.savez_compressed("interop_deflated.npz", **plain)

# Files every reader must refuse, each for one reason.
np.save("big_endian.npy", np.arange(3, dtype=">f4"))
np.save("fortran.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
np.save("object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
np.save("structured.npy", np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]))

expected = {
    n: {
        "dtype": str(a.dtype),
        "shape": list(a.shape),
        "hex": np.ascontiguousarray(a).tobytes().hex(),
    }
    for n, a in arrays.items()
}
with open("expected.json", "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
