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


class TestNewStateOnlyOnSuccess:
    """Issue 11.5: `new_state` is stored when the run reaches its natural end,
    never after an error, an interrupt, Ctrl-C or an early close (seed 001)."""

    def engine(self, n_ctx: int = 128) -> Engine:
        e = Engine(MODEL, n_ctx=n_ctx, n_threads=2, seed=1)
        e.eval(e.tokenize(PROMPT))
        e.save_state("base")
        return e

    def names(self, e: Engine) -> set[str]:
        return {s.name for s in e.list_states()}

    def test_a_failed_run_stores_nothing(self) -> None:
        e = self.engine(n_ctx=16)
        with pytest.raises(ztensor.ZTensorError):
            list(e.stream("x " * 40, max_tokens=4, new_state="after"))
        with pytest.raises(ztensor.ZTensorError):
            e.generate("x " * 40, max_tokens=4, new_state="after")
        assert self.names(e) == {"base"}

    def test_ctrl_c_and_an_early_close_store_nothing(self) -> None:
        e = self.engine()
        with pytest.raises(KeyboardInterrupt):
            for _ in e.stream("", max_tokens=20, from_state="base", new_state="ctrl-c"):
                raise KeyboardInterrupt
        s = e.stream("", max_tokens=20, from_state="base", new_state="closed")
        next(s)
        s.close()
        assert s.stop_reason == "interrupted" and not s.state_saved
        gen = e.stream_batches("", batch_size=2, max_tokens=20, new_state="batches")
        next(gen)
        gen.close()
        assert self.names(e) == {"base"}

    def test_an_interrupted_run_stores_nothing_and_a_finished_one_does(self) -> None:
        e = self.engine()
        s = e.stream("", max_tokens=20, from_state="base", new_state="cut", exec_id="job")
        next(s)
        assert e.interrupt("job")
        assert list(s) == [] and s.stop_reason == "interrupted"
        r = e.generate("", max_tokens=5, from_state="base", new_state="done", temperature=0.0)
        assert r.metadata["state_saved"] == "true" and r.stop_reason == "length"
        assert self.names(e) == {"base", "done"}
        assert e.get_state("done").tokens_count == e.get_state("base").tokens_count + 5

    def test_async_engine_stores_only_finished_runs(self) -> None:
        e = self.engine()

        async def main() -> None:
            a = AsyncEngine.wrap(e)
            async for _ in a.stream("", max_tokens=20, from_state="base", new_state="early"):
                break
            await asyncio.sleep(0)
            r = await a.generate("", max_tokens=3, from_state="base", new_state="full")
            assert r.stop_reason == "length"

        asyncio.run(main())
        assert self.names(e) == {"base", "full"}


class TestSnapshotPathsAndSettings:
    """Issue 11.7: the model path is stored resolved, the sampler settings
    are re-applied and shown, file errors raise `SnapshotError`."""

    def test_a_relative_model_path_restores_from_another_directory(self, tmp_path: Path) -> None:
        import os
        import shutil

        (tmp_path / "models").mkdir()
        shutil.copy(MODEL, tmp_path / "models" / "m.zt")
        os.chdir(tmp_path / "models")
        e = Engine("m.zt", n_ctx=64, n_threads=1)
        head = ids(e, PROMPT, 4, 7)
        snapshot.dump(e, tmp_path / "s.zt")
        info = snapshot.snapshot_info(tmp_path / "s.zt")
        assert info.model_path == str((tmp_path / "models" / "m.zt").resolve())
        assert e.path == info.model_path
        os.chdir(tmp_path)
        restored = snapshot.load(tmp_path / "s.zt")
        assert restored.fingerprint == e.fingerprint
        assert restored.tokens == e.tokens and len(head) == 4

    def test_sampler_settings_are_restored_and_shown(
        self, tmp_path: Path, whole: list[int]
    ) -> None:
        from ztensor.engine import SamplerSettings

        e, _ = first_part()
        e.snapshot(tmp_path / "s.zt")
        want = SamplerSettings(0.9, 40, 0.95, 0.05, 1.1, 0.0, 0.0, 64)
        assert snapshot.snapshot_info(tmp_path / "s.zt").sampler == want
        restored = snapshot.load(tmp_path / "s.zt")
        assert restored.sampler == want
        # A default continuation goes on exactly like the original run.
        assert [t.id for t in restored.stream("", max_tokens=N - K)] == whole[K:]
        # Explicit arguments win.
        greedy = Engine(MODEL, n_ctx=128).restore(tmp_path / "s.zt")
        got = [t.id for t in greedy.stream("", max_tokens=6, temperature=0.0)]
        again = snapshot.load(tmp_path / "s.zt")
        assert got == [t.id for t in again.stream("", max_tokens=6, temperature=0.0)]
        assert greedy.sampler.temperature == 0.0 and greedy.sampler.repeat_penalty == 1.1

    def test_file_errors_raise_snapshot_error_chained_to_the_os_error(self, tmp_path: Path) -> None:
        e, _ = first_part()
        with pytest.raises(ztensor.SnapshotError) as info:
            snapshot.dump(e, tmp_path / "no-such-dir" / "s.zt")
        assert isinstance(info.value.__cause__, OSError) and info.value.fault == "io"
        with pytest.raises(ztensor.SnapshotError) as info:
            snapshot.load(tmp_path / "missing.zt")
        assert isinstance(info.value.__cause__, FileNotFoundError)
        e.snapshot(tmp_path / "s.zt")
        with pytest.raises(ztensor.SnapshotError) as info:
            snapshot.load(tmp_path / "s.zt", model_path=tmp_path / "gone.zt")
        assert isinstance(info.value.__cause__, FileNotFoundError)
        with pytest.raises(ztensor.SnapshotError):
            snapshot.snapshot_info(tmp_path / "missing.zt")
        with pytest.raises(ztensor.SnapshotError):
            e.load_state("x", tmp_path / "missing.zt")
        e.save_state("a")
        with pytest.raises(ztensor.SnapshotError):
            e.dump_state("a", tmp_path / "no-such-dir" / "a.zt")
