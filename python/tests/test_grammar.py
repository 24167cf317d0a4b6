"""Constrained generation from Python: `grammar=` (GBNF) and `json_schema=`.

The tiny fixture model (random weights) checks the plumbing quickly; on
SmolLM2-135M-Instruct (skipped when the file is not cached, see
`scripts/fetch_models.py`) sampled JSON parses and validates.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

import ztensor
from ztensor.engine import Engine

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
CACHE = Path(os.environ.get("ZT_MODEL_CACHE", Path.home() / ".cache" / "ztensor-models"))
SMOL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"


class TestGrammarPlumbing:
    """The keyword arguments reach the engine and constrain its output."""

    def test_gbnf_constrains_sampled_output(self) -> None:
        e = Engine(FIXTURES / "gguf" / "llama-tiny-bpe-f32.gguf", n_ctx=128)
        for seed in range(5):
            e.reset()
            out = e.generate(
                "answer:",
                max_tokens=24,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                min_p=0.0,
                seed=seed,
                grammar='root ::= ("yes" | "no") " " [0-9]{1,3}',
            )
            assert re.fullmatch(r"(yes|no)( [0-9]{0,3})?|y(es?)?|no?|", str(out)), out
            if out.metadata["stop_reason"] == "eos":
                assert re.fullmatch(r"(yes|no) [0-9]{1,3}", str(out)), out

    def test_both_or_bad_grammars_raise(self) -> None:
        e = Engine(FIXTURES / "gguf" / "llama-tiny-bpe-f32.gguf", n_ctx=64)
        with pytest.raises(ztensor.ZTensorValueError):
            e.generate("x", max_tokens=2, grammar='root ::= "a"', json_schema={})
        with pytest.raises(ztensor.ZTensorError, match="undefined"):
            e.generate("x", max_tokens=2, grammar="root ::= nowhere")


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    {
        "type": "array",
        "items": {"enum": ["red", "green", "blue"]},
        "minItems": 1,
        "maxItems": 4,
    },
]


@pytest.mark.skipif(not SMOL.exists(), reason=f"{SMOL} absent: scripts/fetch_models.py")
class TestSmolLM2Json:
    """Sampled JSON on a real model parses and validates."""

    @pytest.mark.parametrize("schema", SCHEMAS)
    def test_sampled_json_validates(self, schema: dict[str, Any]) -> None:
        jsonschema = pytest.importorskip("jsonschema")
        e = Engine(SMOL, n_ctx=256)
        for seed in range(10):
            e.reset()
            out = e.generate(
                "Give a JSON example:",
                max_tokens=64,
                temperature=1.0,
                seed=seed,
                json_schema=schema,
            )
            if out.metadata["stop_reason"] != "eos":
                continue
            jsonschema.validate(json.loads(str(out)), schema)
