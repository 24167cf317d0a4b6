#!/usr/bin/env python3
"""A float64 numpy Gemma 3 forward pass on a GGUF's exact (dequantized) weights.

The reference the engine's Gemma 3 logits are compared against: every weight
is dequantized with the `gguf` package (ggml's own block layouts), and every
operation runs in float64, so the only error left is the file's quantization.
Follows llama.cpp's `src/models/gemma3.cpp` (facts only): embeddings scaled by
sqrt(n_embd), per-head RMS norm of q and k before NEOX RoPE (base 10 000 on
local layers, `rope.freq_base` on every sixth), queries scaled by
1/sqrt(head_dim), a sliding window on local layers, post-attention and
post-FFW norms before the residual adds, GELU(tanh)-gated FFN, tied LM head.

Usage:
    python scripts/gemma3_reference.py MODEL.gguf --tokens 2,818,5279,529,7001,563 \
        --greedy 8 --json tests/data/gemma3_reference.json
    python scripts/gemma3_reference.py MODEL.gguf --tokens-file ids.txt \
        --greedy 4 --json tests/data/gemma3_reference_window.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(r: GGUFReader, key: str):
    f = r.fields.get(key)
    if f is None:
        return None
    v = f.parts[f.data[0]]
    return v.tolist()[0] if v.size == 1 else v.tolist()


def load(path: str) -> tuple[dict, dict]:
    r = GGUFReader(path)
    hp = {
        "n_embd": field(r, "gemma3.embedding_length"),
        "n_layer": field(r, "gemma3.block_count"),
        "n_head": field(r, "gemma3.attention.head_count"),
        "n_head_kv": field(r, "gemma3.attention.head_count_kv"),
        "head_dim": field(r, "gemma3.attention.key_length"),
        "eps": field(r, "gemma3.attention.layer_norm_rms_epsilon"),
        "rope_base": field(r, "gemma3.rope.freq_base") or 10000.0,
        "window": field(r, "gemma3.attention.sliding_window"),
    }
    w = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = [int(x) for x in reversed(t.shape.tolist())]
        w[t.name] = a.reshape(shape)
    return hp, w


def rms(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    # x: [n, heads, hd]; NEOX: pairs (i, i + hd/2).
    hd = x.shape[-1]
    inv = base ** (-2.0 * np.arange(hd // 2) / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., : hd // 2], x[..., hd // 2 :]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def forward(hp: dict, w: dict, tokens: list[int]) -> np.ndarray:
    """Logits [n_vocab] of the last position of `tokens` (from position 0)."""
    n, d = len(tokens), hp["n_embd"]
    nh, nkv, hd, eps = hp["n_head"], hp["n_head_kv"], hp["head_dim"], hp["eps"]
    emb = w["token_embd.weight"]
    x = emb[tokens] * np.sqrt(d)
    pos = np.arange(n, dtype=np.float64)
    for il in range(hp["n_layer"]):
        p = f"blk.{il}."
        local = il % 6 < 5
        h = rms(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(n, nh, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n, nkv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, nkv, hd)
        q = rms(q, w[p + "attn_q_norm.weight"], eps)
        k = rms(k, w[p + "attn_k_norm.weight"], eps)
        base = 10000.0 if local else hp["rope_base"]
        q, k = rope(q, pos, base), rope(k, pos, base)
        q = q / np.sqrt(hd)
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        allowed = j <= i
        if local:
            allowed &= (i - j) < hp["window"]
        out = np.zeros((n, nh, hd))
        for hh in range(nh):
            kv = hh // (nh // nkv)
            sc = q[:, hh, :] @ k[:, kv, :].T
            sc = np.where(allowed, sc, -np.inf)
            sc = np.exp(sc - sc.max(axis=1, keepdims=True))
            sc /= sc.sum(axis=1, keepdims=True)
            out[:, hh, :] = sc @ v[:, kv, :]
        a = out.reshape(n, nh * hd) @ w[p + "attn_output.weight"].T
        x = x + rms(a, w[p + "post_attention_norm.weight"], eps)
        h = rms(x, w[p + "ffn_norm.weight"], eps)
        g = gelu_tanh(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)
        f = g @ w[p + "ffn_down.weight"].T
        x = x + rms(f, w[p + "post_ffw_norm.weight"], eps)
    x = rms(x[-1], w["output_norm.weight"], eps)
    head = w.get("output.weight", emb)
    return head @ x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", help="comma-separated prompt ids")
    ap.add_argument("--tokens-file", help="a file of comma-separated prompt ids")
    ap.add_argument("--greedy", type=int, default=8)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", help="write the reference here")
    args = ap.parse_args()
    hp, w = load(args.model)
    spec = args.tokens if args.tokens else open(args.tokens_file).read()
    toks = [int(t) for t in spec.strip().split(",")]
    prompt = list(toks)
    first = None
    for _ in range(args.greedy + 1):
        logits = forward(hp, w, toks)
        if first is None:
            first = logits
        toks.append(int(np.argmax(logits)))
    top = np.argsort(-first)[: args.top]
    ref = {
        "model_sha256_prefix": "a5fd3b62",
        "prompt": prompt,
        "top_ids": [int(t) for t in top],
        "top_logits": [float(first[t]) for t in top],
        "greedy": toks[len(prompt) : len(prompt) + args.greedy],
    }
    print(json.dumps(ref, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ref, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
