"""Every code example of the API contract (shared seed 003), run verbatim.

Blocks run in order in one namespace per test class, as a reader of the
document would run them; documented outputs are asserted. Blocks that move
tensors to a CUDA device run only where CUDA is available.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")
pytest.importorskip("ml_dtypes")

NEEDS_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="example moves tensors to CUDA"
)


def run(block: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Executes a documentation block in `namespace`."""
    exec(compile(textwrap.dedent(block), "<seed-003>", "exec"), namespace)
    return namespace


QUICK_START = """
import numpy as np
from ztensor import Reader, Writer

# Write tensors
with Writer("model.zt") as writer:
    writer.add_tensor("weights", np.random.randn(512, 1024).astype(np.float32))
    writer.add_tensor("bias", np.zeros(1024, dtype=np.float32))

# Read tensors
with Reader("model.zt") as reader:
    weights = reader["weights"]  # Returns numpy array
    bias = reader.read_tensor("bias")
"""

WRITER_IMPORT = """
from ztensor import Writer
"""

WRITER_CTOR = """
with Writer("output.zt") as writer:
    # Add tensors here
    pass
"""

ADD_TENSOR = """
import numpy as np

with Writer("tensors.zt") as writer:
    # Basic tensor
    writer.add_tensor("embedding", np.zeros((512, 768), dtype=np.float32))
    
    # With compression (level 3)
    writer.add_tensor("large_tensor", np.random.randn(10000, 10000).astype(np.float32), compress=True)
    
    # With generic level (e.g. 1 for speed, 19 for size)
    writer.add_tensor("max_compressed", data, compress=19)
    
    # PyTorch tensor
    import torch
    writer.add_tensor("torch_tensor", torch.randn(100, 100))
"""

ADD_CSR = """
from scipy.sparse import csr_matrix

sparse = csr_matrix([[1, 0, 2], [0, 0, 3], [4, 0, 0]])
with Writer("sparse.zt") as writer:
    writer.add_sparse_csr("my_csr", sparse.data, sparse.indices, sparse.indptr, sparse.shape)
"""

ADD_COO = """
# Manual COO creation
values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
indices = np.array([[0, 1, 2], [0, 1, 2]], dtype=np.uint64)  # (ndim, nnz)
shape = (3, 3)

with Writer("coo.zt") as writer:
    writer.add_sparse_coo("diagonal", values, indices, shape)
"""

READER_IMPORT = """
from ztensor import Reader
"""

READER_CTOR = """
with Reader("model.zt") as reader:
    print(f"Contains {len(reader)} tensors")
    print(f"Tensor names: {reader.tensor_names}")
"""

READER_GETITEM = """
with Reader("model.zt") as reader:
    # By name (returns tensor data)
    weights = reader["weights"]
    
    # By index (returns TensorMetadata)
    first_meta = reader[0]
"""

READ_TENSOR = """
with Reader("model.zt") as reader:
    # As NumPy array
    arr = reader.read_tensor("weights", to='numpy')
    
    # As PyTorch tensor
    tensor = reader.read_tensor("weights", to='torch')
"""

METADATA = """
with Reader("model.zt") as reader:
    meta = reader.metadata("weights")
    print(f"Name: {meta.name}")
    print(f"Shape: {meta.shape}")
    print(f"Dtype: {meta.dtype_str}")
"""

ITERATION = """
with Reader("model.zt") as reader:
    for metadata in reader:
        print(f"{metadata.name}: {metadata.shape}")
"""

MEMBERSHIP = """
with Reader("model.zt") as reader:
    if "weights" in reader:
        print("Found weights!")
"""

META_REPR = """
with Reader("model.zt") as reader:
    meta = reader.metadata("weights")
    print(meta)  # <TensorMetadata name='weights' shape=(512, 768) dtype='float32'>
"""

TORCH_IMPORT = """
from ztensor.torch import save_file, load_file
"""

TORCH_SAVE_FILE = """
import torch
from ztensor.torch import save_file

tensors = {
    "embedding": torch.zeros(512, 1024),
    "attention": torch.randn(256, 256)
}
save_file(tensors, "model.zt")
"""

TORCH_LOAD_FILE = """
from ztensor.torch import load_file

# Load to CPU
tensors = load_file("model.zt")

# Load to GPU
tensors = load_file("model.zt", device="cuda:0")
"""

TORCH_SAVE = """
from ztensor.torch import save

tensors = {"weights": torch.randn(100, 100)}
data = save(tensors)
"""

TORCH_LOAD = """
from ztensor.torch import load

tensors = load(data)
"""

SAVE_MODEL = """
import torch
from ztensor.torch import save_model

model = torch.nn.Linear(1024, 512)
save_model(model, "linear.zt")
"""

LOAD_MODEL = """
from ztensor.torch import load_model

model = torch.nn.Linear(1024, 512)
missing, unexpected = load_model(model, "linear.zt", device="cuda:0")
"""

ERRORS = """
from ztensor import ZTensorError

try:
    with Reader("nonexistent.zt") as reader:
        pass
except ZTensorError as e:
    print(f"Error: {e}")
"""

BASIC = """
import numpy as np
from ztensor import Reader, Writer

# Create and write tensors
data = {
    "weights": np.random.randn(512, 1024).astype(np.float32),
    "bias": np.zeros(1024, dtype=np.float32),
}

with Writer("model.zt") as writer:
    for name, tensor in data.items():
        writer.add_tensor(name, tensor)

# Read and verify
with Reader("model.zt") as reader:
    for meta in reader:
        tensor = reader[meta.name]
        assert np.allclose(tensor, data[meta.name])
        print(f"✓ {meta.name}: {meta.shape}")
"""

COMPRESSED = """
import numpy as np
from ztensor import Writer, Reader

# Large tensor with compression
large_tensor = np.random.randn(5000, 5000).astype(np.float32)

with Writer("compressed.zt") as writer:
    writer.add_tensor("data", large_tensor, compress=True)

with Reader("compressed.zt") as reader:
    meta = reader.metadata("data")
    print(f"Encoding: {meta.encoding}")  # 'zstd'
    loaded = reader["data"]
"""

SPARSE = """
import numpy as np
from scipy.sparse import csr_matrix, coo_matrix
from ztensor import Writer, Reader

# Create sparse matrices
csr = csr_matrix([[1, 0, 2], [0, 0, 3], [4, 0, 0]], dtype=np.float32)
coo = coo_matrix([[1, 0], [0, 2]], dtype=np.float64)

with Writer("sparse.zt") as writer:
    writer.add_sparse_csr("csr_data", csr.data, csr.indices, csr.indptr, csr.shape)

with Reader("sparse.zt") as reader:
    loaded_csr = reader.read_tensor("csr_data", to='numpy')
    print(type(loaded_csr))  # <class 'scipy.sparse._csr.csr_matrix'>
"""

TORCH_INTEGRATION = """
import torch
from ztensor.torch import save_file, load_file, save_model, load_model

# Save/load tensors
tensors = {"embed": torch.randn(1000, 768)}
save_file(tensors, "tensors.zt")
loaded = load_file("tensors.zt", device="cpu")

# Save/load models
model = torch.nn.TransformerEncoderLayer(d_model=512, nhead=8)
save_model(model, "transformer.zt")

new_model = torch.nn.TransformerEncoderLayer(d_model=512, nhead=8)
load_model(new_model, "transformer.zt")
"""

HALF = """
import numpy as np
from ztensor import Writer, Reader

# float16
fp16 = np.array([1.0, 2.0, 3.0], dtype=np.float16)

# bfloat16 (requires ml_dtypes)
from ml_dtypes import bfloat16
bf16 = np.array([1.0, 2.0, 3.0], dtype=bfloat16)

with Writer("half.zt") as writer:
    writer.add_tensor("fp16", fp16)
    writer.add_tensor("bf16", bf16)

with Reader("half.zt") as reader:
    print(reader.metadata("bf16").dtype_str)  # 'bfloat16'
"""


class TestCoreApiExamples:
    """The Writer/Reader/TensorMetadata sections, in document order."""

    def test_quick_start(self) -> None:
        ns = run(QUICK_START, {})
        assert ns["weights"].shape == (512, 1024) and ns["weights"].dtype == np.float32
        assert ns["bias"].shape == (1024,) and not ns["bias"].any()

    def test_writer_section(self) -> None:
        ns = run(WRITER_IMPORT, {})
        run(WRITER_CTOR, ns)
        # `data` is the array the surrounding text means; any array will do.
        ns["data"] = np.random.randn(256, 256).astype(np.float32)
        run(ADD_TENSOR, ns)
        run(ADD_CSR, ns)
        run(ADD_COO, ns)
        from ztensor import Reader

        with Reader("tensors.zt") as r:
            assert r.metadata("large_tensor").encoding == "zstd"
            assert r.metadata("max_compressed").encoding == "zstd"
            np.testing.assert_array_equal(r["max_compressed"], ns["data"])
            assert r.metadata("torch_tensor").dtype_str == "float32"
        with Reader("sparse.zt") as r:
            np.testing.assert_array_equal(
                r.read_tensor("my_csr").toarray(), [[1, 0, 2], [0, 0, 3], [4, 0, 0]]
            )
        with Reader("coo.zt") as r:
            np.testing.assert_array_equal(r.read_tensor("diagonal").toarray(), np.diag([1.0, 2, 3]))

    def test_reader_section(self, capsys: pytest.CaptureFixture[str]) -> None:
        ns = run(QUICK_START, {})
        run(READER_IMPORT, ns)
        run(READER_CTOR, ns)
        out = capsys.readouterr().out
        assert "Contains 2 tensors" in out
        assert "Tensor names: ['bias', 'weights']" in out
        run(READER_GETITEM, ns)
        assert ns["weights"].shape == (512, 1024)
        assert ns["first_meta"].name == "bias"
        run(READ_TENSOR, ns)
        assert isinstance(ns["arr"], np.ndarray)
        assert isinstance(ns["tensor"], torch.Tensor)
        assert torch.equal(ns["tensor"], torch.from_numpy(np.array(ns["arr"])))
        run(METADATA, ns)
        out = capsys.readouterr().out
        assert "Name: weights\nShape: (512, 1024)\nDtype: float32" in out
        run(ITERATION, ns)
        assert capsys.readouterr().out == "bias: (1024,)\nweights: (512, 1024)\n"
        run(MEMBERSHIP, ns)
        assert capsys.readouterr().out == "Found weights!\n"

    def test_tensor_metadata_repr(self, capsys: pytest.CaptureFixture[str]) -> None:
        from ztensor import Writer

        with Writer("model.zt") as w:
            w.add_tensor("weights", np.zeros((512, 768), dtype=np.float32))
        run(META_REPR, {"Reader": __import__("ztensor").Reader})
        assert capsys.readouterr().out == (
            "<TensorMetadata name='weights' shape=(512, 768) dtype='float32'>\n"
        )


class TestTorchApiExamples:
    """The `ztensor.torch` section."""

    def test_save_and_load_file(self) -> None:
        ns = run(TORCH_IMPORT, {})
        run(TORCH_SAVE_FILE, ns)
        loaded = ns["load_file"]("model.zt")
        assert torch.equal(loaded["attention"], ns["tensors"]["attention"])
        assert torch.equal(loaded["embedding"], torch.zeros(512, 1024))

    @NEEDS_CUDA
    def test_load_file_to_gpu(self) -> None:
        ns = run(TORCH_IMPORT, {})
        run(TORCH_SAVE_FILE, ns)
        run(TORCH_LOAD_FILE, ns)
        assert ns["tensors"]["attention"].device.type == "cuda"

    def test_save_and_load_bytes(self) -> None:
        ns = run(TORCH_SAVE, {"torch": torch})
        original = ns["tensors"]["weights"]
        run(TORCH_LOAD, ns)
        assert isinstance(ns["data"], bytes)
        assert torch.equal(ns["tensors"]["weights"], original)

    def test_save_model(self) -> None:
        ns = run(SAVE_MODEL, {})
        from ztensor.torch import load_model

        fresh = torch.nn.Linear(1024, 512)
        assert load_model(fresh, "linear.zt") == ([], [])
        assert torch.equal(fresh.weight, ns["model"].weight)

    @NEEDS_CUDA
    def test_load_model_to_gpu(self) -> None:
        ns = run(SAVE_MODEL, {})
        run(LOAD_MODEL, ns)
        assert (ns["missing"], ns["unexpected"]) == ([], [])


class TestErrorExample:
    def test_missing_file(self, capsys: pytest.CaptureFixture[str]) -> None:
        from ztensor import Reader

        run(ERRORS, {"Reader": Reader})
        out = capsys.readouterr().out
        assert out.startswith("Error: ") and "nonexistent.zt" in out


class TestCompleteExamples:
    def test_basic(self, capsys: pytest.CaptureFixture[str]) -> None:
        run(BASIC, {})
        assert capsys.readouterr().out == "✓ bias: (1024,)\n✓ weights: (512, 1024)\n"

    def test_compressed(self, capsys: pytest.CaptureFixture[str]) -> None:
        ns = run(COMPRESSED, {})
        assert capsys.readouterr().out == "Encoding: zstd\n"
        np.testing.assert_array_equal(ns["loaded"], ns["large_tensor"])

    def test_sparse(self, capsys: pytest.CaptureFixture[str]) -> None:
        ns = run(SPARSE, {})
        assert capsys.readouterr().out == "<class 'scipy.sparse._csr.csr_matrix'>\n"
        np.testing.assert_array_equal(ns["loaded_csr"].toarray(), ns["csr"].toarray())

    def test_torch_integration(self) -> None:
        ns = run(TORCH_INTEGRATION, {})
        assert torch.equal(ns["loaded"]["embed"], ns["tensors"]["embed"])
        for (name, a), (_, b) in zip(
            ns["model"].state_dict().items(), ns["new_model"].state_dict().items()
        ):
            assert torch.equal(a, b), name

    def test_half_precision(self, capsys: pytest.CaptureFixture[str]) -> None:
        import ml_dtypes

        run(HALF, {})
        assert capsys.readouterr().out == "bfloat16\n"
        from ztensor import Reader

        with Reader("half.zt") as r:
            assert r["bf16"].dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(r["bf16"].astype(np.float32), [1.0, 2.0, 3.0])
            assert r["fp16"].dtype == np.float16
