"""`ztensor.engine`: logits against transformers' reference on the fixture
models (GGUF directly and converted to `.zt`), tokenization against
llama.cpp, generation determinism, streaming, Token/TokenBatch, Ctrl-C."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

import ztensor
from ztensor.engine import Engine, Token, TokenBatch

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
REF = FIXTURES / "reference"


def ref_tokens(model: str) -> list[int]:
    return list(json.loads((REF / model / "ref_tokens.json").read_text()))


class TestReferenceParity:
    """The engine agrees with llama.cpp and the gguf package."""

    @pytest.mark.parametrize(
        "stem",
        ["llama-tiny-f32", "qwen2-tiny-f16", "llama-k-q4_k_m", "llama-k-q6_k", "qwen2-tiny-q8_0"],
    )
    def test_logits_match_the_reference(self, stem: str, tmp_path: Path) -> None:
        model, kind = stem.rsplit("-", 1)
        want = np.load(REF / model / f"ref_logits_gguf_{kind}.npy")
        zt = tmp_path / "m.zt"
        ztensor.convert(FIXTURES / "gguf" / f"{stem}.gguf", zt)
        for path in (FIXTURES / "gguf" / f"{stem}.gguf", zt):
            e = Engine(path, n_ctx=64, n_threads=2, kv_dtype="f32")
            got = e.eval(ref_tokens(model))
            assert got.shape == want.shape
            # Dense weights are exact to f32 rounding; quantized weights take
            # 8-bit activations in a 5+ token prefill on CPUs with AVX-512
            # VNNI (as llama.cpp does): the bound for those is 0.15.
            bound = 1e-4 if kind in ("f32", "f16") else 0.15
            assert np.abs(got - want).max() < bound

    def test_tokenizer_matches_llama_cpp(self) -> None:
        for model in ("llama-tiny", "qwen2-tiny-bpe"):
            cases = json.loads((REF / model / "tokenize_cases.json").read_text())
            e = Engine(FIXTURES / "gguf" / cases["gguf"], n_ctx=32)
            for c in cases["cases"]:
                ids = e.tokenize(c["text"], add_bos=False, parse_special=c["parse_special"])
                assert ids == c["ids"], c["text"]
                assert e.detokenize(ids) == c["detok"]
            assert e.tokenize("hello") == cases["cases"][1]["ids_add_special"]

    def test_dequantization_equals_the_gguf_package(self) -> None:
        """Every quantized tensor of every fixture, decoded by our kernels and
        by `gguf.quants.dequantize`."""
        gguf = pytest.importorskip("gguf")
        from gguf.quants import dequantize as reference

        from ztensor.engine import dequantize

        checked: set[str] = set()
        for path in sorted((FIXTURES / "gguf").glob("*.gguf")):
            r = ztensor.open(path)
            for t in gguf.GGUFReader(path).tensors:
                kind = t.tensor_type.name.lower()
                if kind in ("f32",) and len(t.shape) == 1:
                    continue
                want = reference(t.data, t.tensor_type).reshape(
                    tuple(reversed([int(d) for d in t.shape]))
                )
                got = dequantize(r, t.name)
                np.testing.assert_array_equal(
                    got, want.astype(np.float32), err_msg=f"{path.name}:{t.name}"
                )
                checked.add(kind)
        assert checked >= {
            "f16",
            "q8_0",
            "q4_0",
            "q4_1",
            "q5_0",
            "q5_1",
            "q2_k",
            "q3_k",
            "q4_k",
            "q5_k",
            "q6_k",
        }


class TestGeneration:
    """Generation: determinism, streaming, stop strings, interrupts."""

    def test_generation_is_deterministic_and_streams(self) -> None:
        path = FIXTURES / "gguf" / "llama-tiny-f16.gguf"
        a = Engine(path, n_ctx=128, seed=7)
        text = a.generate("hello world", max_tokens=12, temperature=0.9)
        b = Engine(path, n_ctx=128, seed=7)
        toks = list(b.stream("hello world", max_tokens=12, temperature=0.9))
        assert "".join(t.text for t in toks) == text
        assert len(toks) <= 12 and all(isinstance(t, Token) for t in toks)
        assert [t.position for t in toks] == list(
            range(toks[0].position, toks[0].position + len(toks))
        )
        assert all(0.0 < t.prob() <= 1.0 for t in toks)
        # An explicit seed restarts the same stream; an empty prompt continues.
        a.reset()
        assert a.generate("hello world", max_tokens=12, temperature=0.9, seed=7) == text
        n = len(a.tokens)
        a.generate("", max_tokens=3, temperature=0.0)
        assert len(a.tokens) == n + 3
        # Greedy equals the fixture's greedy continuation.
        g = json.loads((REF / "llama-tiny" / "greedy.json").read_text())
        want = g["by_type"]["f16"]["transformers_gguf_weights"]["tokens"]
        e = Engine(path, n_ctx=128, kv_dtype="f32")
        e.eval(ref_tokens("llama-tiny"))
        got = [t.id for t in e.stream("", max_tokens=len(want), temperature=0.0)]
        assert got == want

    def test_stop_strings_and_batches(self) -> None:
        e = Engine(FIXTURES / "gguf" / "llama-tiny-f32.gguf", n_ctx=128, seed=1)
        full = e.generate("the quick", max_tokens=30, temperature=0.0)
        stop = full[5:8]
        e.reset()
        cut = e.generate("the quick", max_tokens=30, temperature=0.0, stop=[stop])
        assert cut == full[: full.index(stop)]
        e.reset()
        batches = list(e.stream_batches("the quick", batch_size=4, max_tokens=10, temperature=0.0))
        assert batches[-1].is_final and not any(b.is_final for b in batches[:-1])
        assert "".join(b.text() for b in batches) == full[: len("".join(b.text() for b in batches))]

    def test_ctrl_c_stops_between_tokens_and_the_engine_survives(self) -> None:
        e = Engine(FIXTURES / "gguf" / "llama-tiny-f32.gguf", n_ctx=256, seed=3)
        seen = 0
        # A shell starts background jobs with SIGINT ignored, and Python then
        # keeps it ignored: install the usual handler for this test.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt):
                for _ in e.stream("hello", max_tokens=200, temperature=0.8):
                    seen += 1
                    if seen == 3:
                        signal.raise_signal(signal.SIGINT)
        finally:
            signal.signal(signal.SIGINT, previous)
        assert seen == 3
        before = len(e.tokens)
        e.generate("", max_tokens=2, temperature=0.0)
        assert len(e.tokens) == before + 2


class TestSurface:
    """The Token/TokenBatch surface and input errors."""

    def test_token_and_batch_surface(self) -> None:
        t = Token(id=42, position=0, text="hello", logprob=-0.5, is_special=False)
        assert abs(t.prob() - 0.6065) < 1e-3 and not t.is_eos()
        assert t.to_dict()["text"] == "hello" and json.loads(t.encode())["id"] == 42
        batch = TokenBatch.from_tokens(
            [
                Token.with_text(1, "Hello", 0),
                Token.with_text(2, " ", 1),
                Token.with_text(3, "World", 2),
            ],
            sequence_id=1,
        )
        assert (len(batch), batch.text(), batch.token_ids(), batch.positions()) == (
            3,
            "Hello World",
            [1, 2, 3],
            [0, 1, 2],
        )
        batch.set_metadata("model", "tiny")
        assert batch.get_metadata("model") == "tiny" and not batch.is_empty()

    def test_token_and_batch_refuse_junk(self) -> None:
        with pytest.raises(TypeError, match="Token.id must be an int"):
            Token(id="a")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Token.position = -1"):
            Token(id=1, position=-1)
        with pytest.raises(ValueError, match="NaN"):
            Token(id=1, logprob=float("nan"))
        with pytest.raises(TypeError, match="Token.text"):
            Token(id=1, text=b"x")  # type: ignore[arg-type]
        assert Token(id=1, logprob=float("-inf")).prob() == 0.0
        with pytest.raises(TypeError, match=r"tokens\[0\] is a int"):
            TokenBatch.from_tokens([1])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="takes a Token"):
            TokenBatch().add("x")  # type: ignore[arg-type]

    def test_token_types_are_top_level_as_in_seed_002(self) -> None:
        assert ztensor.Token is Token and ztensor.TokenBatch is TokenBatch
        token = ztensor.Token.with_text(42, "hello", 0, logprob=-0.5)
        batch = ztensor.TokenBatch(sequence_id=1)
        batch.add(token)
        assert (batch.text(), batch.sequence_id, batch.is_final) == ("hello", 1, False)

    def test_bad_inputs_raise(self) -> None:
        e = Engine(FIXTURES / "gguf" / "llama-tiny-f32.gguf", n_ctx=8)
        with pytest.raises(ztensor.ZTensorError):
            e.eval([10_000])
        with pytest.raises(ztensor.ZTensorError):
            e.eval(list(range(9)))
        assert e.tokens == []
        with pytest.raises(ztensor.UnsupportedError):
            Engine(FIXTURES / "safetensors" / "llama-tiny" / "model.safetensors")
        with pytest.raises(ValueError):
            Engine(FIXTURES / "gguf" / "llama-tiny-f32.gguf", kv_dtype="int8")

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"max_tokens": -1}, "max_tokens = -1"),
            ({"top_k": -1}, "top_k = -1"),
            ({"penalty_last_n": 2**40}, "penalty_last_n = 1099511627776"),
            ({"seed": -1}, "seed = -1"),
            ({"temperature": -1.0}, "temperature = -1"),
            ({"temperature": float("nan")}, "temperature = NaN"),
            ({"top_p": 0.0}, "top_p = 0"),
            ({"min_p": 1.5}, "min_p = 1.5"),
            ({"repeat_penalty": 0.0}, "repeat_penalty = 0"),
            ({"stop": [""]}, "empty stop string"),
        ],
    )
    def test_bad_generation_settings_are_value_errors(
        self, kwargs: dict[str, object], match: str
    ) -> None:
        e = Engine(FIXTURES / "gguf" / "llama-tiny-f32.gguf", n_ctx=64, n_threads=1)
        args: dict[str, object] = {"max_tokens": 2, **kwargs}
        with pytest.raises(ztensor.ZTensorValueError, match=match):
            e.generate("hello", **args)  # type: ignore[arg-type]
        assert e.tokens == []

    def test_named_states_are_immutable_and_names_checked(self) -> None:
        e = Engine(FIXTURES / "gguf" / "llama-tiny-f32.gguf", n_ctx=64, n_threads=1, seed=1)
        first = e.generate("hello world", max_tokens=3, temperature=0, new_state="s")
        assert first.metadata["state_saved"] == "true"
        kept = e.get_state("s").tokens_count
        with pytest.raises(ztensor.ZTensorValueError, match="taken"):
            e.generate("different prompt", max_tokens=5, temperature=0, new_state="s")
        with pytest.raises(ztensor.ZTensorValueError, match="taken"):
            e.save_state("s")
        assert e.get_state("s").tokens_count == kept
        for bad in ["../../etc/passwd", "", "a.b", "x" * 129]:
            with pytest.raises(ztensor.ZTensorValueError, match="names are 1-128"):
                e.save_state(bad)
            with pytest.raises(ztensor.ZTensorValueError, match="names are 1-128"):
                e.generate("x", max_tokens=1, new_state=bad)
        assert [s.name for s in e.list_states()] == ["s"]
        e.delete_state("s")
        e.save_state("s")


TINY = Path(__file__).resolve().parents[2] / "src" / "bin" / "zt" / "assets" / "llama-tiny-q8_0.zt"


class TestStopReasons:
    """Issue 11.8: every run says why it stopped, on its last token, its
    `TokenStream`, its final `TokenBatch` and `generate`'s result."""

    def eos_engine(self) -> tuple[Engine, dict[str, object]]:
        # A strongly negative presence penalty over a window holding only
        # EOS makes EOS the greedy choice.
        e = Engine(TINY, n_ctx=64, n_threads=1)
        e.eval(e.tokenize("hello world") + [e.info["eos"]])
        kw: dict[str, object] = {
            "temperature": 0.0,
            "presence_penalty": -1000.0,
            "penalty_last_n": 1,
        }
        return e, kw

    def test_eos_is_yielded_and_ends_the_run(self) -> None:
        e, kw = self.eos_engine()
        n = len(e.tokens)
        toks = list(e.stream("", max_tokens=5, **kw))  # type: ignore[arg-type]
        assert len(toks) == 1 and toks[0].is_eos() and toks[0].id == e.info["eos"]
        assert toks[0].stop_reason == "eos" and toks[0].position == n
        assert len(e.tokens) == n  # EOS is not added to the context
        e.eval([e.info["eos"]])
        r = e.generate("", max_tokens=5, **kw)  # type: ignore[arg-type]
        assert r == "" and r.stop_reason == "eos" and r.metadata["tokens"] == "1"

    def test_length_stop_and_batches(self) -> None:
        e = Engine(TINY, n_ctx=128, seed=1)
        toks = list(e.stream("the quick", max_tokens=6, temperature=0.0))
        assert [t.stop_reason for t in toks] == [None] * 5 + ["length"]
        e.reset()
        full = e.generate("the quick", max_tokens=30, temperature=0.0)
        assert full.stop_reason == "length" and isinstance(full, str)
        stop = full[7:10]
        e.reset()
        s = e.stream("the quick", max_tokens=30, temperature=0.0, stop=[stop])
        streamed = list(s)
        want = full[: full.index(stop)]
        assert s.stop_reason == "stop" and streamed[-1].stop_reason == "stop"
        assert "".join(t.text for t in streamed) == want == s.text
        e.reset()
        cut = e.generate("the quick", max_tokens=30, temperature=0.0, stop=[stop])
        assert cut == want and cut.stop_reason == "stop"
        # A full context ends with "length" too.
        small = Engine(TINY, n_ctx=8)
        last = list(small.stream("the quick", max_tokens=50, temperature=0.0))[-1]
        assert last.stop_reason == "length" and last.position == 7
        e.reset()
        batches = list(e.stream_batches("the quick", batch_size=4, sequence_id=7, max_tokens=10))
        assert {b.sequence_id for b in batches} == {7}
        assert batches[-1].is_final and batches[-1].get_metadata("stop_reason") == "length"
        assert batches[-1].get_metadata("exec_id")


class TestInterruptAndConcurrency:
    """Issue 11.6: a run has an id and can be stopped from another thread;
    concurrent calls on one engine serialise instead of "Already borrowed"."""

    def test_too_many_threads_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="n_threads 1000000"):
            Engine(TINY, n_ctx=64, n_threads=10**6)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n_threads": -1}, "n_threads must be between 0 and"),
            ({"n_ctx": -5}, "n_ctx must be between 0 and"),
            ({"seed": -1}, "seed must be between 0 and"),
            ({"seed": 2**64}, "seed must be between 0 and"),
            ({"n_threads": 1.5}, "n_threads must be an int"),
            ({"n_ctx": True}, "n_ctx must be an int"),
        ],
    )
    def test_bad_counts_are_value_errors_naming_the_parameter(
        self, kwargs: dict[str, object], match: str
    ) -> None:
        with pytest.raises(ValueError, match=match):
            Engine(TINY, **kwargs)  # type: ignore[arg-type]

    def test_interrupt_by_id_from_another_thread(self) -> None:
        import threading

        e = Engine(TINY, n_ctx=256, n_threads=1, seed=3)
        # The run is paused after its first token while another thread
        # interrupts it by id: no race with how fast tokens come.
        s = e.stream("hello", max_tokens=250, exec_id="job")
        first = next(s)
        answers: list[bool] = []
        t = threading.Thread(target=lambda: answers.append(e.interrupt("job")))
        t.start()
        t.join(30)
        assert answers == [True]
        rest = list(s)
        assert s.stop_reason == "interrupted" and rest == []
        assert len(e.tokens) == first.position + 1
        assert not e.interrupt("job") and not e.interrupt("unknown")
        # The cancel handle of a stream; cancelling before the start runs nothing.
        s = e.stream("", max_tokens=50)
        first = next(s)
        s.cancel()
        assert list(s) == [] and s.stop_reason == "interrupted"
        assert len(e.tokens) == first.position + 1
        n = len(e.tokens)
        s = e.stream("more text", max_tokens=5)
        s.cancel()
        assert list(s) == [] and len(e.tokens) == n

    def test_concurrent_runs_serialise(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        e = Engine(TINY, n_ctx=256, n_threads=1)
        e.eval(e.tokenize("Once upon a time"))
        e.save_state("base")

        def run(seed: int) -> str:
            return e.generate("", max_tokens=15, from_state="base", seed=seed, temperature=0.9)

        want = [run(seed) for seed in range(6)]
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(run, range(6)))
            reads = [pool.submit(lambda: (e.tokens, e.tokenize("abc"))) for _ in range(6)]
            assert all(f.result()[1] == e.tokenize("abc") for f in reads)
        assert got == want

    def test_a_second_stream_on_the_same_thread_ends_the_first(self) -> None:
        e = Engine(TINY, n_ctx=128)
        first = e.stream("hello", max_tokens=20)
        next(first)
        assert len(list(e.stream("", max_tokens=3, temperature=0.0))) == 3
        assert list(first) == [] and first.stop_reason == "interrupted"
        with pytest.raises(ztensor.ZTensorValueError):
            s = e.stream("", exec_id="same")
            next(s)
            e.stream("", exec_id="same")
