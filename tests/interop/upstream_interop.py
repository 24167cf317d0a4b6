"""Interop with upstream ztensor 2.1.2 (run inside a venv that has it).

    python upstream_interop.py write DIR   # upstream writes files + DIR/expected.tsv
    python upstream_interop.py check DIR   # upstream reads our files, checks DIR/expected.tsv

expected.tsv lines: file, object, layout, shape (comma-separated), part,
dtype, logical ("-" for none), hex of the part's decoded bytes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import ztensor

Row = tuple[str, str, str, list[int], str, str, str, bytes]


def _rows_for_dense(file: str, name: str, arr: np.ndarray, dtype: str, logical: str | None) -> Row:
    return (file, name, "dense", list(arr.shape), "data", dtype, logical or "-", arr.tobytes())


def write_upstream(out: Path) -> list[Row]:
    rng = np.random.default_rng(7)
    rows: list[Row] = []

    dense = {
        "f64": rng.standard_normal((2, 3)).astype("<f8"),
        "f32": rng.standard_normal((3, 4)).astype("<f4"),
        "f16": rng.standard_normal((5,)).astype("<f2"),
        "bf16": rng.integers(0, 2**16, (2, 3), dtype="<u2"),
        "i64": rng.integers(-(2**40), 2**40, (4,), dtype="<i8"),
        "i32": rng.integers(-(2**20), 2**20, (4,), dtype="<i4"),
        "i16": rng.integers(-300, 300, (4,), dtype="<i2"),
        "i8": rng.integers(-100, 100, (6,), dtype="i1"),
        "u64": rng.integers(0, 2**60, (2,), dtype="<u8"),
        "u32": rng.integers(0, 2**31, (2,), dtype="<u4"),
        "u16": rng.integers(0, 2**16, (3,), dtype="<u2"),
        "u8": rng.integers(0, 255, (7,), dtype="u1"),
    }
    for canonical, fname in ((True, "up-dense-canonical.zt"), (False, "up-dense-4k.zt")):
        w = ztensor.Writer(str(out / fname), canonical=canonical, align=None if canonical else 4096)
        for dt, arr in sorted(dense.items()):
            w.add(f"t_{dt}", arr.reshape(-1).view(np.uint8), list(arr.shape), dt)
            rows.append(_rows_for_dense(fname, f"t_{dt}", arr, dt, None))
        w.finish()

    fname = "up-logical.zt"
    w = ztensor.Writer(str(out / fname), canonical=False, align=4096)
    boolean = np.array([1, 0, 1, 1, 0], dtype=np.uint8)
    c64 = (rng.standard_normal(6) + 1j * rng.standard_normal(6)).astype(np.complex64)
    f4 = np.array([0x21, 0x43, 0x05], dtype=np.uint8)  # 5 elements, zero padding nibble
    f8 = rng.integers(0, 255, (4,), dtype=np.uint8)
    scalar = np.array(3.5, dtype="<f4")
    empty = np.zeros((0, 3), dtype="<f4")
    w.add("a_bool", boolean, [5], "u8", logical="bool")
    w.add("b_c64", c64.view(np.uint8), [6], "f32", logical="complex64")
    w.add("c_f4", f4, [5], "u8", logical="f4_e2m1")
    w.add("d_f8", f8, [4], "u8", logical="f8_e4m3fn")
    w.add("e_scalar", scalar.reshape(-1).view(np.uint8), [], "f32")
    w.add("f_empty", empty.reshape(-1).view(np.uint8), [0, 3], "f32")
    w.finish()
    rows += [
        (fname, "a_bool", "dense", [5], "data", "u8", "bool", boolean.tobytes()),
        (fname, "b_c64", "dense", [6], "data", "f32", "complex64", c64.tobytes()),
        (fname, "c_f4", "dense", [5], "data", "u8", "f4_e2m1", f4.tobytes()),
        (fname, "d_f8", "dense", [4], "data", "u8", "f8_e4m3fn", f8.tobytes()),
        (fname, "e_scalar", "dense", [], "data", "f32", "-", scalar.tobytes()),
        (fname, "f_empty", "dense", [0, 3], "data", "f32", "-", b""),
    ]

    fname = "up-zstd.zt"
    w = ztensor.Writer(str(out / fname), canonical=False, align=4096)
    big = np.repeat(np.arange(700_000, dtype="<f4") % 13, 1)  # > 2 MiB: several frames
    small = rng.standard_normal(32).astype("<f4")
    w.add("big", big.view(np.uint8), [700_000], "f32", encoding="zt.zstd-seekable/1")
    w.add("small", small.view(np.uint8), [4, 8], "f32", encoding="zt.zstd-seekable/1")
    w.finish()
    rows.append((fname, "big", "dense", [700_000], "data", "f32", "-", big.tobytes()))
    rows.append((fname, "small", "dense", [4, 8], "data", "f32", "-", small.tobytes()))

    fname = "up-sparse.zt"
    w = ztensor.Writer(str(out / fname), canonical=False, align=4096)
    values = np.array([1.0, 2.0, 3.0, 4.0], dtype="<f4")
    indices = np.array([0, 3, 1, 2], dtype="<u8")
    indptr = np.array([0, 2, 3, 4], dtype="<u8")
    w.add_object(
        "csr",
        [3, 4],
        {
            "values": {"dtype": "f32", "data": values.view(np.uint8)},
            "indices": {"dtype": "u64", "data": indices.view(np.uint8)},
            "indptr": {"dtype": "u64", "data": indptr.view(np.uint8)},
        },
        layout="zt.sparse_csr/1",
    )
    coo_values = np.array([5.0, 6.0, 7.0], dtype="<f4")
    coords = np.array([0, 1, 2, 2, 0, 1], dtype="<u8")  # SoA: rows then cols
    w.add_object(
        "coo",
        [3, 3],
        {
            "values": {"dtype": "f32", "data": coo_values.view(np.uint8)},
            "coords": {"dtype": "u64", "data": coords.view(np.uint8)},
        },
        layout="zt.sparse_coo/1",
    )
    w.finish()
    for role, arr, dt in (("values", values, "f32"), ("indices", indices, "u64"), ("indptr", indptr, "u64")):
        rows.append((fname, "csr", "zt.sparse_csr/1", [3, 4], role, dt, "-", arr.tobytes()))
    for role, arr, dt in (("values", coo_values, "f32"), ("coords", coords, "u64")):
        rows.append((fname, "coo", "zt.sparse_coo/1", [3, 3], role, dt, "-", arr.tobytes()))

    fname = "up-append.zt"
    first = np.arange(10, dtype="<f4")
    second = np.arange(20, dtype="<i4")
    w = ztensor.Writer(str(out / fname), canonical=False, align=4096)
    w.add("first", first.view(np.uint8), [10], "f32")
    w.finish()
    w = ztensor.Writer(str(out / fname), canonical=False, align=4096, append=True)
    w.add("second", second.view(np.uint8), [20], "i32")
    w.finish()
    rows.append((fname, "first", "dense", [10], "data", "f32", "-", first.tobytes()))
    rows.append((fname, "second", "dense", [20], "data", "i32", "-", second.tobytes()))

    fname = "up-attrs.zt"
    w = ztensor.Writer(str(out / fname), canonical=False, align=4096)
    w.set_attributes({"name": "upstream", "n": 3, "pi": 1.5, "list": [1, 2], "nested": {"ok": True}})
    one = np.ones(3, dtype="<f4")
    w.add("one", one.view(np.uint8), [3], "f32")
    w.finish()
    rows.append((fname, "one", "dense", [3], "data", "f32", "-", one.tobytes()))
    return rows


def save_rows(path: Path, rows: list[Row]) -> None:
    with path.open("w") as f:
        for file, obj, layout, shape, role, dtype, logical, data in rows:
            f.write("\t".join([file, obj, layout, ",".join(map(str, shape)), role, dtype, logical, data.hex()]) + "\n")


def load_rows(path: Path) -> list[Row]:
    rows: list[Row] = []
    for line in path.read_text().splitlines():
        file, obj, layout, shape, role, dtype, logical, hexdata = line.split("\t")
        dims = [int(d) for d in shape.split(",")] if shape else []
        rows.append((file, obj, layout, dims, role, dtype, logical, bytes.fromhex(hexdata)))
    return rows


def check_ours(directory: Path) -> int:
    rows = load_rows(directory / "expected.tsv")
    failures = 0
    seen: dict[str, set[str]] = {}
    for file, obj, layout, shape, role, dtype, logical, data in rows:
        src = ztensor.open(str(directory / file))
        seen.setdefault(file, set()).add(obj)
        t = src[obj]
        part = t if (t.parts == ["data"] and role == "data") else t[role]
        got = (t.layout, list(t.shape), part.dtype, part.logical or "-", part.tobytes())
        want = (layout, shape, dtype, logical, data)
        if got != want:
            failures += 1
            print(f"MISMATCH {file} {obj}/{role}: got {got[:4]} want {want[:4]} bytes equal={got[4] == data}")
    for file, objects in seen.items():
        src = ztensor.open(str(directory / file))
        if set(src.keys()) != objects:
            failures += 1
            print(f"MISMATCH {file}: objects {sorted(src.keys())} != {sorted(objects)}")
        ours_only = "crc32c" in file or "blake3" in file
        try:
            checked, undigested = src.verify(deep=True)
            print(f"ok {file}: upstream verified {checked} parts ({undigested} without a digest it knows)")
        except Exception as e:  # upstream cannot check our extra digest kinds
            if not ours_only:
                failures += 1
                print(f"VERIFY FAILED {file}: {e}")
            else:
                print(f"ok {file}: opened and read; upstream cannot verify {file.split('-')[-1]} ({e})")
    attrs_file = directory / "ours-attrs.zt"
    if attrs_file.exists():
        attrs = ztensor.open(str(attrs_file)).attributes
        want_attrs = json.loads((directory / "expected-attrs.json").read_text())
        if attrs != want_attrs:
            failures += 1
            print(f"MISMATCH attributes: {attrs!r} != {want_attrs!r}")
    print(f"{len(rows) - failures} passed, {failures} failed")
    return 1 if failures else 0


def check_convert(gguf_path: str, ours_path: str) -> int:
    """Upstream converts `gguf_path`; both results must agree in objects,
    layouts, shapes, dtypes, part bytes and metadata values."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        theirs_path = os.path.join(d, "theirs.zt")
        ztensor.convert(gguf_path, theirs_path, align=4096)
        theirs = ztensor.open(theirs_path)
        ours = ztensor.open(ours_path)
        problems = []
        if sorted(theirs.keys()) != sorted(ours.keys()):
            problems.append(f"objects differ: {sorted(set(theirs.keys()) ^ set(ours.keys()))}")
        for name in theirs.keys():
            if name not in ours:
                continue
            a, b = theirs[name], ours[name]
            for attr in ("layout", "shape", "dtype", "logical", "parts"):
                if getattr(a, attr) != getattr(b, attr):
                    problems.append(f"{name}.{attr}: {getattr(a, attr)!r} != {getattr(b, attr)!r}")
            for p in a.parts:
                pa = a if a.parts == ["data"] else a[p]
                pb = b if b.parts == ["data"] else b[p]
                if pa.tobytes() != pb.tobytes():
                    problems.append(f"{name}/{p}: bytes differ")
        ours_attrs = dict(ours.attributes or {})
        ours_attrs.pop("gguf", None)  # our conversion record (spec §19)
        ours_attrs.pop("ztensor.fingerprint", None)  # our cached model fingerprint (§19)
        their_attrs = theirs.attributes or {}
        for k in sorted(set(ours_attrs) | set(their_attrs)):
            if ours_attrs.get(k) != their_attrs.get(k):
                problems.append(f"attribute {k}: {str(ours_attrs.get(k))[:60]} != {str(their_attrs.get(k))[:60]}")
        for p in problems:
            print("MISMATCH", os.path.basename(gguf_path), p)
        print(f"{os.path.basename(gguf_path)}: {len(theirs.keys())} objects compared, {len(problems)} mismatches")
        return 1 if problems else 0


def main() -> int:
    if sys.argv[1] == "convert-check":
        return check_convert(sys.argv[2], sys.argv[3])
    mode, directory = sys.argv[1], Path(sys.argv[2])
    os.makedirs(directory, exist_ok=True)
    if mode == "write":
        save_rows(directory / "expected.tsv", write_upstream(directory))
        return 0
    if mode == "check":
        return check_ours(directory)
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    raise SystemExit(main())
