"""Grammar state survives a snapshot: a constrained run snapshotted midway and
restored in a new process continues token for token like the uninterrupted
run (the tiny fixture model always; SmolLM2 under a JSON Schema when cached).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ztensor.engine import Engine

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
TINY = FIXTURES / "gguf" / "llama-tiny-bpe-f32.gguf"
CACHE = Path(os.environ.get("ZT_MODEL_CACHE", Path.home() / ".cache" / "ztensor-models"))
SMOL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"

GBNF = r"""
root  ::= "[" item ("," item){2,40} "]"
item  ::= "{" [a-z]{1,6} ":" value "}"
value ::= [0-9]{1,4} | "\"" [a-zé ]{0,8} "\"" | "[" value "]"
"""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"type": "integer"},
        "landmarks": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "population", "landmarks"],
    "additionalProperties": False,
}

SAMPLER: dict[str, Any] = {"temperature": 0.9, "top_k": 0, "top_p": 1.0, "min_p": 0.0}

# Run in a fresh interpreter: restore the snapshot into a new engine and
# continue under the same grammar with an empty prompt.
CHILD = r"""
import json, sys
from ztensor.engine import Engine
a = json.loads(sys.argv[1])
e = Engine.restore(a["snapshot"], n_threads=1)
if a.get("clear"):
    e.clear_grammar()
grammar = a.get("grammar")
schema = a.get("json_schema")
with e.stream("", max_tokens=a["n"], grammar=grammar, json_schema=schema, **a["sampler"]) as run:
    ids = [t.id for t in run]
print(json.dumps(ids))
"""


def ids_of(e: Engine, prompt: str, n: int, seed: int | None, **kwargs: Any) -> list[int]:
    """The token ids of one streamed run."""
    with e.stream(prompt, max_tokens=n, seed=seed, **SAMPLER, **kwargs) as run:
        return [t.id for t in run]


def continue_in_child(snapshot: Path, n: int, **kwargs: Any) -> list[int]:
    """The continuation computed by a new Python process."""
    arg = json.dumps({"snapshot": str(snapshot), "n": n, "sampler": SAMPLER, **kwargs})
    res = subprocess.run(
        [sys.executable, "-c", CHILD, arg], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ids: list[int] = json.loads(res.stdout.strip().splitlines()[-1])
    return ids


class TestGrammarSnapshotInNewProcess:
    """Snapshot mid-generation under a grammar, restore elsewhere, continue."""

    def test_gbnf_on_the_fixture_model(self, tmp_path: Path) -> None:
        n, k = 40, 13
        whole = ids_of(Engine(TINY, n_ctx=160), "data:", n, 5, grammar=GBNF)
        assert len(whole) > k + 5, whole
        e = Engine(TINY, n_ctx=160)
        first = ids_of(e, "data:", k, 5, grammar=GBNF)
        snap = tmp_path / "mid.zt"
        e.snapshot(snap)
        rest = continue_in_child(snap, n - k, grammar=GBNF)
        assert first + rest == whole
        # Given no grammar, the continuation goes on under the saved one.
        assert continue_in_child(snap, n - k) == rest
        # Cleared, it is free: a different run, so the grammar really was
        # carried.
        free = continue_in_child(snap, n - k, clear=True)
        assert free != rest

    def test_restored_grammar_is_live_until_cleared(self, tmp_path: Path) -> None:
        e = Engine(TINY, n_ctx=160)
        first = ids_of(e, "data:", 9, 5, grammar=GBNF)
        snap = tmp_path / "live.zt"
        e.snapshot(snap)
        back = Engine.restore(snap)
        assert back.grammar == GBNF
        kept = ids_of(back, "", 20, None)
        assert back.grammar == GBNF
        again = Engine.restore(snap)
        assert ids_of(again, "", 20, None, grammar=GBNF) == kept
        again = Engine.restore(snap)
        again.clear_grammar()
        assert again.grammar is None
        assert ids_of(again, "", 20, None) != kept
        # A new prompt without a grammar is free too.
        ids_of(back, " more", 3, None)
        assert back.grammar is None
        assert len(first) == 9

    @pytest.mark.skipif(not SMOL.exists(), reason=f"{SMOL} absent: scripts/fetch_models.py")
    def test_json_schema_on_smollm2(self, tmp_path: Path) -> None:
        n, k = 40, 12
        prompt = "A JSON object about a city:\n"
        whole = ids_of(Engine(SMOL, n_ctx=128), prompt, n, 3, json_schema=SCHEMA)
        assert len(whole) > k + 5, whole
        e = Engine(SMOL, n_ctx=128)
        first = ids_of(e, prompt, k, 3, json_schema=SCHEMA)
        assert first == whole[:k]
        snap = tmp_path / "smol.zt"
        e.snapshot(snap, compress=True)
        rest = continue_in_child(snap, n - k, json_schema=SCHEMA)
        assert first + rest == whole
