"""Proof on a real model: SmolLM2-135M-Instruct, 50 sampled generations
(temperature 1.0, min-p 0.05, no top-k / top-p) under each of three JSON
Schemas; every one ends at EOS, parses with `json` and validates with
`jsonschema`. Skipped when the model is not cached (see
`scripts/fetch_models.py`). Bounded: short prompts, at most 128 tokens
(the grammar allows up to 21 whitespace characters after the value, as
llama.cpp's conversion does, and the model often spends them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ztensor.engine import Engine

CACHE = Path(os.environ.get("ZT_MODEL_CACHE", Path.home() / ".cache" / "ztensor-models"))
SMOL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
RUNS = 50

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
    },
    "required": ["name", "age", "member"],
    "additionalProperties": False,
}

COLOURS: dict[str, Any] = {
    "type": "array",
    "items": {"enum": ["red", "green", "blue", "cyan"]},
    "minItems": 1,
    "maxItems": 4,
}

SEGMENT: dict[str, Any] = {
    "$defs": {
        "point": {
            "type": "object",
            "properties": {
                "x": {"type": "integer", "minimum": -9, "maximum": 9},
                "y": {"type": "integer", "minimum": -9, "maximum": 9},
            },
            "required": ["x", "y"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "a": {"$ref": "#/$defs/point"},
        "b": {"$ref": "#/$defs/point"},
        "tag": {"anyOf": [{"type": "null"}, {"const": "ab"}]},
    },
    "required": ["a", "b", "tag"],
    "additionalProperties": False,
}

CASES = [
    ("person", PERSON, "A person as JSON:\n"),
    ("colours", COLOURS, "Some colours as a JSON list:\n"),
    ("segment", SEGMENT, "A line segment as JSON:\n"),
]


@pytest.fixture(scope="module")
def smol() -> Engine:
    """One SmolLM2 engine for the module."""
    if not SMOL.exists():
        pytest.skip(f"{SMOL} absent: scripts/fetch_models.py")
    return Engine(SMOL, n_ctx=160, n_threads=2)


class TestSmolLM2SchemaProofs:
    """Every sampled generation under a schema is valid JSON under it."""

    @pytest.mark.parametrize("name,schema,prompt", CASES, ids=[c[0] for c in CASES])
    def test_fifty_sampled_generations_validate(
        self, smol: Engine, name: str, schema: dict[str, Any], prompt: str
    ) -> None:
        jsonschema = pytest.importorskip("jsonschema")
        seen = set()
        for seed in range(RUNS):
            smol.reset()
            out = smol.generate(
                prompt,
                max_tokens=128,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                min_p=0.05,
                repeat_penalty=1.0,
                seed=seed,
                json_schema=schema,
            )
            text = str(out)
            assert out.metadata["stop_reason"] == "eos", (name, seed, text)
            value = json.loads(text)
            jsonschema.validate(value, schema)
            seen.add(json.dumps(value, sort_keys=True))
        # Sampled, not one answer repeated.
        assert len(seen) > 1, name
