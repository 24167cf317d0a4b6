#!/usr/bin/env python3
"""Reference data for the real-model tests, made with llama.cpp (llama-cpp-python).

For each real model (fetched by ``scripts/fetch_models.py`` into the model cache):

1. requantize the file to all-F32 with ``llama_model_quantize`` (ftype 0,
   ``allow_requantize``) into the cache: the file's exact weights, dequantized;
2. tokenization of a varied text set with ``Llama(vocab_only=True).tokenize(text,
   add_bos=..., special=False)`` -> ``tokens.json``;
3. next-token logits for a few prompts from the F32 file (the reference) and from the
   quantized file, both with llama.cpp: the F32 file's top-k ids with both sides' logits
   at those ids, and each side's full-vocabulary argmax -> ``logits.json``;
4. greedy continuations from both files with the gap between the best and second-best
   logit at each F32 step -> ``greedy.json``.

The output goes to ``tests/data/real/<model>/`` (small JSON files). Settings, chosen so
that llama.cpp is as exact as it gets: F32 KV cache, flash attention off, the whole
prompt in one batch. The script stays runnable; needs ``llama-cpp-python`` (build it
with ``../shared/tools/make_models/setup_env.sh``) and numpy::

    .venv-llama/venv/bin/python scripts/make_real_refs.py [smollm2] [gemma3]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import fetch_models  # noqa: E402

TOP_K = 40
N_GEN = 16
THREADS = 2

# Tokenization cases: (name, text). Marker text is typed as plain text (special=False).
TEXTS: list[tuple[str, str]] = [
    ("empty", ""),
    ("space", " "),
    ("hello", "Hello world"),
    ("leading_space", " Hello world"),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("capital", "The capital of France is"),
    ("numbers", "3.14159 and 1234567890, also 2024-12-01 or 1e-9 and 007"),
    ("money", "Price: $1,299.99 (-15%) vs €42,00 — that's 10x!"),
    ("contractions", "I'm sure you'll see they've done it, haven't they? We'd"),
    ("unicode_latin", "naïve café, Zürich, São Paulo, façade, Ærøskøbing"),
    ("cyrillic_greek", "Привет, мир! Καλημέρα κόσμε"),
    ("cjk", "日本語のテキストと中文文本，还有한국어 텍스트。"),
    ("emoji", "I love 🦀 and 🐍! 👍🏽 👨‍👩‍👧 ❤️"),
    ("arabic_hebrew", "مرحبا بالعالم שלום עולם"),
    ("devanagari", "नमस्ते दुनिया"),
    ("code_python", 'def add(a, b):\n    """Sum."""\n    return a + b\n\nprint(add(1, 2))\n'),
    ("code_rust", 'fn main() {\n\tlet v: Vec<u32> = (0..10).collect();\n\tprintln!("{v:?}");\n}\n'),
    ("code_json", '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}'),
    ("spaces_run", "a  b   c    d     e          f"),
    ("newlines", "line one\nline two\n\nline four\n\n\n\nafter four newlines"),
    ("tabs", "col1\tcol2\t\tcol4\t\t\t\tend"),
    ("mixed_ws", " \n \t\n\r\n  \t  x \n"),
    ("trailing_ws", "trailing spaces   "),
    ("only_newlines", "\n\n\n"),
    ("im_end_text", "user typed <|im_end|> and <|im_start|>assistant here"),
    ("gemma_turn_text", "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"),
    ("bos_eos_text", "<s> </s> <bos> <eos> <|endoftext|> <pad>"),
    ("html", '<div class="a">Hello &amp; <b>bye</b></div>'),
    ("url", "See https://example.com/path?q=1&r=two#frag or mailto:a@b.org"),
    ("punct", "Wait... what?! (yes) [no] {maybe} -- 'quoted' \"double\" `tick`"),
    ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"),
    ("math", "∑_{i=1}^{n} i² = n(n+1)(2n+1)/6 ≤ ∞ ± √2"),
    ("accents_combining", "e\u0301 vs \u00e9, A\u030a vs \u00c5"),
    ("repeat", "ha" * 40),
]

PROMPTS: dict[str, list[tuple[str, str]]] = {
    "smollm2": [
        ("capital", "The capital of France is"),
        (
            "chat",
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
            "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
            "<|im_end|>\n<|im_start|>assistant\n",
        ),
        ("code", "def fibonacci(n):\n    "),
        ("story", "Once upon a time, in a small village,"),
    ],
    "gemma3": [
        ("capital", "The capital of France is"),
        (
            "chat",
            "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
            "<start_of_turn>model\n",
        ),
        ("code", "def fibonacci(n):\n    "),
        ("story", "Once upon a time, in a small village,"),
    ],
}

# A prompt longer than Gemma 3's 512-token sliding window (local layers must mask).
LONG_TEXT = (
    " ".join(
        f"Item {i}: the {['red', 'green', 'blue', 'amber'][i % 4]} box holds {i * 3 % 17} stones."
        for i in range(60)
    )
    + " Question: what does item 7's box hold? Answer: item 7's box holds"
)


def f32_path(model: fetch_models.Model, cache: Path) -> Path:
    """Where the F32 requantization of ``model`` lives in the cache."""
    return cache / (Path(model.file_name).stem + ".f32.gguf")


def requantize_f32(src: Path, dst: Path) -> None:
    """Writes the all-F32 requantization of ``src`` to ``dst`` (atomic, skipped if present)."""
    if dst.is_file():
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 0  # LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    params.nthread = THREADS
    tmp = dst.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {src} -> F32 failed: {rc}")
    os.replace(tmp, dst)
    print(f"requantized {src.name} -> {dst} ({dst.stat().st_size} bytes)", flush=True)


def open_model(path: Path, n_ctx: int) -> Llama:
    """llama.cpp with the most exact settings (F32 KV, no flash attention, one batch)."""
    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=1024,
        n_ubatch=1024,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        logits_all=False,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        flash_attn=False,
        seed=0,
        verbose=False,
    )


def current_logits(llm: Llama) -> np.ndarray:
    """The last position's logits, read from the context (``Llama.scores`` stays
    zero without ``logits_all`` in 0.3.36)."""
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)


def last_logits(llm: Llama, ids: list[int]) -> np.ndarray:
    """Logits after evaluating ``ids`` from an empty context."""
    llm.reset()
    llm.eval(ids)
    return current_logits(llm)


def greedy(llm: Llama, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """``n`` greedy tokens after ``ids`` and the top-1/top-2 gap at each step."""
    logits = last_logits(llm, ids)
    out, margins = [], []
    for _ in range(n):
        top2 = np.sort(logits)[-2:]
        nxt = int(np.argmax(logits))
        out.append(nxt)
        margins.append(round(float(top2[1] - top2[0]), 5))
        llm.eval([nxt])
        logits = current_logits(llm)
    return out, margins


def r(x: Any) -> list[float]:
    """Floats rounded for compact JSON (1e-5 is far below every tolerance used)."""
    return [round(float(v), 5) for v in x]


def make(name: str, out_root: Path) -> None:
    """Writes the reference files of model ``name``."""
    model = fetch_models.MODELS[name]
    cache = fetch_models.cache_dir()
    quant = fetch_models.fetch(model, cache)
    f32 = f32_path(model, cache)
    requantize_f32(quant, f32)
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)

    # Tokenization (vocab only: fast, no weights).
    vocab = Llama(model_path=str(quant), vocab_only=True, verbose=False)
    cases = []
    for case, text in TEXTS:
        b = text.encode()
        cases.append(
            {
                "name": case,
                "text": text,
                "ids": vocab.tokenize(b, add_bos=False, special=False),
                "ids_bos": vocab.tokenize(b, add_bos=True, special=False),
            }
        )
    meta = {
        "model": model.file_name,
        "sha256": model.sha256,
        "llama_cpp_python": llama_cpp.__version__,
        "n_vocab": vocab.n_vocab(),
    }
    write(
        out / "tokens.json",
        {**meta, "call": "tokenize(text, add_bos, special=False)", "cases": cases},
    )
    del vocab

    prompts = list(PROMPTS[name])
    if name == "gemma3":
        prompts.append(("long", LONG_TEXT))
    ref = open_model(f32, n_ctx=2048)
    q = open_model(quant, n_ctx=2048)
    logit_rows, greedy_rows = [], []
    for pname, text in prompts:
        ids = ref.tokenize(text.encode(), add_bos=True, special=True)
        lr = last_logits(ref, ids)
        lq = last_logits(q, ids)
        top = np.argsort(-lr, kind="stable")[:TOP_K]
        diff = lq[top] - lr[top]
        logit_rows.append(
            {
                "name": pname,
                "text": text,
                "ids": ids,
                "top_ids": [int(i) for i in top],
                "f32": r(lr[top]),
                "quant": r(lq[top]),
                "f32_argmax": int(np.argmax(lr)),
                "quant_argmax": int(np.argmax(lq)),
                "quant_max_abs": round(float(np.abs(diff).max()), 5),
                "quant_rms": round(float(np.sqrt(np.mean(diff * diff))), 5),
            }
        )
        if pname == "long":
            continue
        g_ref, m_ref = greedy(ref, ids, N_GEN)
        g_q, _ = greedy(q, ids, N_GEN)
        greedy_rows.append(
            {
                "name": pname,
                "ids": ids,
                "f32": g_ref,
                "f32_margins": m_ref,
                "quant": g_q,
                "f32_text": ref.detokenize(g_ref).decode("utf-8", "replace"),
                "quant_text": q.detokenize(g_q).decode("utf-8", "replace"),
            }
        )
        print(f"{name}/{pname}: {len(ids)} tokens; greedy F32 {greedy_rows[-1]['f32_text']!r}")
    settings = {"kv": "f32", "flash_attn": False, "top_k": TOP_K, "n_gen": N_GEN}
    write(out / "logits.json", {**meta, "f32_model": f32.name, **settings, "prompts": logit_rows})
    write(out / "greedy.json", {**meta, "f32_model": f32.name, **settings, "prompts": greedy_rows})


def write(path: Path, obj: Any) -> None:
    """JSON with one list per line kept short enough to diff."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), indent=1) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)


def main() -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="smollm2, gemma3 (default: both)")
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "real"))
    args = ap.parse_args()
    for name in args.models or list(fetch_models.MODELS):
        if name not in fetch_models.MODELS:
            ap.error(f"unknown model {name!r}")
        make(name, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
