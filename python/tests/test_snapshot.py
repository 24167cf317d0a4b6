"""`ztensor.snapshot`, engine states and `AsyncEngine`: an interrupted run
(snapshot, restore in a fresh process) continues token for token; bad
snapshots raise `SnapshotError` and leave the engine generating as before."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import ztensor
from ztensor import snapshot
from ztensor.engine import AsyncEngine, Engine, SnapshotInfo

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "src" / "bin" / "zt" / "assets" / "llama-tiny-q8_0.zt"
OTHER = ROOT.parent / "shared" / "fixtures" / "gguf" / "llama-k-q8_0.gguf"

PROMPT = "Once upon a time"
N, K = 36, 13
SAMPLING = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "repeat_penalty": 1.1}


def ids(engine: Engine, prompt: str, n: int, seed: int | None) -> list[int]:
    return [t.id for t in engine.stream(prompt, max_tokens=n, seed=seed, **SAMPLING)]


def first_part(**kw: object) -> tuple[Engine, list[int]]:
    e = Engine(MODEL, n_ctx=128, n_threads=2, **kw)  # type: ignore[arg-type]
    return e, ids(e, PROMPT, K, 7)


@pytest.fixture(scope="module")
def whole() -> list[int]:
    out = ids(Engine(MODEL, n_ctx=128, n_threads=2), PROMPT, N, 7)
    assert len(out) > K
    return out


CONTINUE = f"""
import json, sys
from ztensor import snapshot
e = snapshot.load(sys.argv[1], n_threads=1)
s = {SAMPLING!r}
print(json.dumps([t.id for t in e.stream("", max_tokens={N - K}, **s)]))
"""


def bad_snapshots(tmp_path: Path) -> dict[str, Path]:
    e, _ = first_part()
    good = tmp_path / "good.zt"
    e.snapshot(good)
    raw = good.read_bytes()
    cases = {
        "truncated": raw[: len(raw) - 64],
        "cut in half": raw[: len(raw) // 2],
        "not a snapshot": MODEL.read_bytes()[:4096],
    }
    # One byte of the first layer's K flipped in place.
    with ztensor.Reader(str(good)) as r:
        offset = r._native_reader().object("kv.k.0")["parts"]["data"]["offset"]
    flipped = bytearray(raw)
    flipped[offset + 5] ^= 0x10
    cases["flipped KV byte"] = bytes(flipped)
    out = {}
    for name, data in cases.items():
        p = tmp_path / (name.replace(" ", "-") + ".zt")
        p.write_bytes(data)
        out[name] = p
    out["good"] = good
    return out


class TestSnapshotRoundTrips:
    """Snapshots restore to a context that continues token for token."""

    def test_restore_in_a_fresh_process_continues_token_for_token(
        self, whole: list[int], tmp_path: Path
    ) -> None:
        e, head = first_part()
        path = tmp_path / "snap.zt"
        snapshot.dump(e, path)
        out = subprocess.run(
            [sys.executable, "-c", CONTINUE, str(path)], check=True, capture_output=True, text=True
        )
        import json

        assert head + json.loads(out.stdout) == whole

    def test_dumps_loads_fork_and_states_continue_alike(self, whole: list[int]) -> None:
        e, head = first_part(kv_dtype="f32")
        blob = snapshot.dumps(e, compress=True)
        restored = snapshot.loads(blob, model_path=MODEL)
        reference = Engine(MODEL, n_ctx=128, kv_dtype="f32")
        assert head + ids(restored, "", N - K, None) == ids(reference, PROMPT, N, 7)

        e, head = first_part()
        e.save_state("after-k")
        fork = e.fork("after-k")
        ids(e, " and then", 5, 3)  # the parent goes its own way
        assert head + ids(fork, "", N - K, None) == whole
        # generate(from_state=..., new_state=...) runs from a state and stores the result.
        e.generate("", max_tokens=N - K, from_state="after-k", new_state="end", **SAMPLING)
        assert e.tokens[-(N - K) :] == whole[K:]
        states = {s.name: s for s in e.list_states()}
        assert set(states) == {"after-k", "end"}
        assert states["end"].tokens_count == states["after-k"].tokens_count + N - K
        assert e.get_state("end").text_tail
        e.delete_state("end")
        with pytest.raises(ztensor.ZTensorKeyError):
            e.get_state("end")

    def test_classmethod_and_instance_restore(self, tmp_path: Path, whole: list[int]) -> None:
        e, _ = first_part()
        e.snapshot(tmp_path / "s.zt")
        built = Engine.restore(tmp_path / "s.zt")
        assert built.n_ctx == 128
        into = Engine(MODEL, n_ctx=64)
        assert into.restore(tmp_path / "s.zt") is into
        assert ids(into, "", N - K, None) == whole[K:]


class TestStates:
    """Named states dumped and loaded one by one."""

    def test_states_dump_and_load_one_by_one(self, tmp_path: Path, whole: list[int]) -> None:
        e, _ = first_part()
        e.save_state("a")
        e.dump_state("a", tmp_path / "a.zt", compress=True)
        other = Engine(MODEL, n_ctx=128, n_threads=1)
        info = other.load_state("b", tmp_path / "a.zt")
        assert info.tokens_count == len(e.tokens)
        assert other.tokens == []  # loading a state does not change the context
        other.use_state("b")
        assert ids(other, "", N - K, None) == whole[K:]


class TestSnapshotInfoAndErrors:
    """Snapshot descriptions and refused snapshots."""

    def test_snapshot_info_without_the_model(self, tmp_path: Path) -> None:
        e, _ = first_part()
        e.snapshot(tmp_path / "s.zt")
        info = snapshot.snapshot_info(tmp_path / "s.zt")
        assert isinstance(info, SnapshotInfo)
        assert info.tokens_count == len(e.tokens) > 0
        assert info.arch_id == "llama"
        assert info.max_context_length == 128
        assert info.model_path == str(MODEL)
        assert info.model_fingerprint == e.fingerprint
        assert info.magic == "ztensor-engine-snapshot" and info.version == 1
        assert Engine.snapshot_info((tmp_path / "s.zt").read_bytes()) == info

    def test_bad_snapshots_raise_and_leave_the_engine_as_it_was(self, tmp_path: Path) -> None:
        cases = bad_snapshots(tmp_path)
        good = cases.pop("good")
        e = Engine(MODEL, n_ctx=128, n_threads=2)
        twin = Engine(MODEL, n_ctx=128, n_threads=2)
        for x in (e, twin):
            ids(x, "The engine's own", 4, 5)
        for name, path in cases.items():
            with pytest.raises(ztensor.SnapshotError) as info:
                e.restore(path)
            assert info.value.fault == "malformed", name
            with pytest.raises(ztensor.SnapshotError):
                e.restore_bytes(path.read_bytes())
        # Too many tokens for the context; another KV type.
        with pytest.raises(ztensor.SnapshotError, match="context") as info:
            Engine(MODEL, n_ctx=8).restore(good)
        assert info.value.fault == "incompatible"
        with pytest.raises(ztensor.SnapshotError, match="KV"):
            Engine(MODEL, n_ctx=128, kv_dtype="f32").restore(good)
        if OTHER.exists():
            with pytest.raises(ztensor.FingerprintMismatchError):
                Engine(OTHER, n_ctx=128).restore(good)
            with pytest.raises(ztensor.SnapshotError):
                snapshot.load(good, model_path=OTHER)
        assert ids(e, "", 12, None) == ids(twin, "", 12, None)


class TestAsyncEngine:
    """The asyncio engine."""

    def test_async_engine_streams_and_restores(self, tmp_path: Path, whole: list[int]) -> None:
        e, head = first_part()
        e.snapshot(tmp_path / "s.zt")

        async def main() -> tuple[list[int], str]:
            a = await AsyncEngine.restore(tmp_path / "s.zt", n_threads=1)
            toks = [t.id async for t in a.stream("", max_tokens=N - K, **SAMPLING)]
            b = AsyncEngine(MODEL, n_ctx=64, seed=1)
            text = await b.generate("hello", max_tokens=4, temperature=0.0)
            return toks, text

        toks, text = asyncio.run(main())
        assert head + toks == whole
        assert isinstance(text, str)
