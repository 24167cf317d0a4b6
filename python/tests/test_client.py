"""`ztensor.client.Client` against a real `zt serve` process.

Greedy output through the client equals `Engine.generate`; streamed tokens
carry the engine's ids; states, interrupt, auth errors, zstd on and off,
timeouts, unreachable servers and bad input map to the documented
exceptions.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serve_openai import FIXTURES, KEY, Served

from ztensor import _native
from ztensor.client import Client, Generation, RpcError
from ztensor.engine import Engine, Token, TokenBatch

MODEL = FIXTURES / "gguf" / "llama-tiny-q8_0.gguf"
SERVICE = "ztensor.v1.Engine"
PROMPT = "hello world, the quick brown fox"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    states = tmp_path_factory.mktemp("states")
    s = Served(MODEL, "--state-dir", str(states))
    yield s
    s.close()


@pytest.fixture(scope="module")
def want() -> str:
    return str(Engine(MODEL).generate(PROMPT, max_tokens=20, temperature=0.0))


def _model_cache() -> Path:
    """Where scripts/fetch_models.py keeps the real models."""
    env = os.environ.get("ZT_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ztensor-models"


def client(server: Served, compression: bool = False, timeout_ms: int = 30000) -> Client:
    """A client with the server's key."""
    c = Client(server.base, timeout_ms=timeout_ms, enable_compression=compression)
    c.set_bearer_token(KEY)
    return c


class TestGenerate:
    """Generation through the Connect routes."""

    @pytest.mark.parametrize("compression", [False, True])
    def test_greedy_equals_engine_generate(
        self, server: Served, want: str, compression: bool
    ) -> None:
        with client(server, compression) as c:
            g = c.generate(PROMPT, max_tokens=20, temperature=0)
        assert isinstance(g, Generation)
        assert g.text == want
        assert g.finish_reason == "length"
        assert g.completion_tokens == 20 and g.prompt_tokens > 0

    @pytest.mark.parametrize("compression", [False, True])
    def test_stream_yields_the_engine_tokens(
        self, server: Served, want: str, compression: bool
    ) -> None:
        with client(server, compression) as c:
            batches = list(c.stream(PROMPT, max_tokens=20, temperature=0))
            n_prompt = len(c.tokenize(PROMPT, add_special=True))
            ids = [t.id for b in batches for t in b]
            assert c.detokenize(ids) == want
        assert all(isinstance(b, TokenBatch) for b in batches)
        final = batches[-1]
        assert final.is_final and final.is_empty()
        assert final.get_metadata("finish_reason") == "length"
        assert final.get_metadata("completion_tokens") == "20"
        tokens: list[Token] = [t for b in batches[:-1] for t in b]
        assert len(tokens) == 20
        assert "".join(b.text() for b in batches) == want
        assert [t.position for t in tokens] == list(range(n_prompt, n_prompt + 20))
        assert all(t.logprob <= 0.0 for t in tokens)

    def test_stream_closed_early_frees_the_server(self, server: Served) -> None:
        with client(server) as c:
            for batch in c.stream("once upon a time", temperature=0):
                assert len(batch) >= 1
                break
            assert c.generate("hi", max_tokens=2).completion_tokens == 2

    def test_chat_messages(self, server: Served) -> None:
        msgs = [{"role": "user", "content": "hi"}]
        with client(server) as c:
            g = c.generate(messages=msgs, max_tokens=4, temperature=0)
            streamed = "".join(
                b.text() for b in c.stream(messages=msgs, max_tokens=4, temperature=0)
            )
        assert g.text == streamed

    def test_json_schema_and_grammar_equal_the_engine(self, server: Served) -> None:
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        gbnf = 'root ::= ("yes" | "no") " " [a-z]+'
        want_json = str(
            Engine(MODEL).generate(PROMPT, max_tokens=16, temperature=0.0, json_schema=schema)
        )
        want_gbnf = str(Engine(MODEL).generate(PROMPT, max_tokens=8, temperature=0.0, grammar=gbnf))
        with client(server) as c:
            g = c.generate(PROMPT, max_tokens=16, temperature=0, json_schema=schema)
            streamed = "".join(
                b.text() for b in c.stream(PROMPT, max_tokens=16, temperature=0, json_schema=schema)
            )
            g_gbnf = c.generate(PROMPT, max_tokens=8, temperature=0, grammar=gbnf)
            x = c.execute("initial", PROMPT, max_tokens=8, temperature=0, grammar=gbnf)
            with pytest.raises(RpcError) as bad:
                c.generate(PROMPT, max_tokens=4, grammar="root ::= nowhere")
        assert g.text == want_json == streamed
        # A state's context is built as /execute builds it, so only the
        # shape is compared there; the stateless route equals the engine.
        assert re.fullmatch(r"(yes|no) [a-z]+", x.output), x.output
        assert g_gbnf.text == want_gbnf
        assert bad.value.code == "invalid_argument"

    def test_seed_example_call_shapes(self, server: Served, want: str) -> None:
        c = client(server)
        request = json.dumps({"prompt": PROMPT, "max_tokens": 20, "temperature": 0}).encode()
        response = c.call(SERVICE, "Generate", request)
        assert json.loads(response)["text"] == want
        response_obj = c.call_json(SERVICE, "Generate", {"prompt": "Hello", "max_tokens": 3})
        assert response_obj["usage"]["completion_tokens"] == 3


class TestStates:
    """Execute, list, get, delete, interrupt."""

    def test_execute_chain_and_fork(self, server: Served) -> None:
        with client(server) as c:
            a = c.execute("initial", "hello", new_state_name="pa", max_tokens=4, temperature=0)
            assert a.error is None and a.state_name == "pa"
            b = c.execute("pa", " world", new_state_name="pb", max_tokens=4, temperature=0)
            f = c.execute("pa", " world", new_state_name="pc", max_tokens=4, temperature=0)
            assert b.output == f.output
            assert {"initial", "pa", "pb", "pc"} <= set(c.states())
            assert c.get_state("pb")["tokens_count"] > c.get_state("pa")["tokens_count"]
            c.delete_state("pc")
            assert "pc" not in c.states()
            with pytest.raises(RpcError) as e:
                c.get_state("pc")
            assert e.value.code == "not_found" and e.value.http_status == 404
            with pytest.raises(RpcError) as e:
                c.execute("pa", "x", new_state_name="pb", max_tokens=1)
            assert e.value.code == "already_exists"

    def test_interrupt_by_id(self, server: Served) -> None:
        with client(server) as c:
            assert c.interrupt("not-running") is False
            result: list[object] = []

            def run() -> None:
                with client(server) as other:
                    result.append(other.execute("initial", "once", exec_id="long-run", seed=1))

            t = threading.Thread(target=run)
            t.start()
            deadline = time.monotonic() + 30
            interrupted = False
            while t.is_alive() and time.monotonic() < deadline and not interrupted:
                interrupted = c.interrupt("long-run")
                time.sleep(0.002)
            t.join(30)
        assert interrupted, "the run ended before it could be interrupted"
        (ex,) = result
        assert ex.error is not None and ex.error["ename"] == "Interrupted"  # type: ignore[attr-defined]
        assert ex.state_name is None  # type: ignore[attr-defined]


class TestErrors:
    """Errors map to ConnectionError, TimeoutError, RuntimeError, ValueError."""

    def test_auth(self, server: Served) -> None:
        c = Client(server.base)
        with pytest.raises(RuntimeError) as e:
            c.states()
        assert isinstance(e.value, RpcError) and e.value.code == "unauthenticated"
        assert e.value.http_status == 401
        c.set_api_key("wrong")
        with pytest.raises(RpcError, match="unauthenticated"):
            c.states()
        c.set_api_key(KEY)
        assert "initial" in c.states()
        c.remove_header("x-api-key")
        c.set_api_key(KEY, header_name="Authorization")  # not a Bearer value
        with pytest.raises(RpcError, match="unauthenticated"):
            c.states()
        c.set_bearer_token(KEY)
        assert c.get_headers() == {"Authorization": f"Bearer {KEY}"}
        assert "initial" in c.states()

    def test_server_side_bad_input(self, server: Served) -> None:
        with client(server) as c:
            with pytest.raises(RpcError, match="max_tokens") as e:
                c.generate("hi", max_tokens=10**8)
            assert e.value.code == "invalid_argument"
            with pytest.raises(RpcError, match="invalid_argument"):
                c.get_state("../../etc/passwd")
            with pytest.raises(RpcError, match="unimplemented"):
                c.call(SERVICE, "NoSuchMethod", b"{}")
            with pytest.raises(RpcError, match="invalid_argument"):
                c.call(SERVICE, "Generate", b"{not json")
            with pytest.raises(RpcError, match="invalid_argument"):
                list(c.stream("hi", max_tokens=10**8))
            assert c.detokenize([]) == ""

    def test_client_side_bad_input(self, server: Served) -> None:
        for url in ("ftp://x", "not a url", "", "http://"):
            with pytest.raises(ValueError):
                Client(url)
        for t in (0, -5, 1.5, True):
            with pytest.raises(ValueError):
                Client(server.base, timeout_ms=t)  # type: ignore[arg-type]
        c = client(server)
        with pytest.raises(ValueError, match="service"):
            c.call("bad/service", "Generate", b"{}")
        with pytest.raises(ValueError, match="method"):
            c.call(SERVICE, "Gen/erate", b"{}")
        with pytest.raises(ValueError, match="body must be bytes"):
            c.call(SERVICE, "Generate", "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="JSON"):
            c.call_json(SERVICE, "Generate", {"x": object()})
        with pytest.raises(ValueError, match="JSON"):
            c.call_json(SERVICE, "Generate", {"x": float("nan")})
        with pytest.raises(ValueError, match="either prompt or messages"):
            c.generate()
        with pytest.raises(ValueError, match="either prompt or messages"):
            c.stream("a", messages=[])  # raised at the call, before iterating
        with pytest.raises(ValueError, match="header name"):
            c.set_header("Bad Header", "x")
        with pytest.raises(ValueError, match="visible ASCII"):
            c.set_header("X-Ok", "line\r\nbreak")
        with pytest.raises(ValueError, match="set by the client"):
            c.set_header("Content-Type", "text/plain")
        with pytest.raises(ValueError, match="empty"):
            c.set_bearer_token("")

    def test_headers_and_properties(self, server: Served) -> None:
        c = Client(server.base + "/", timeout_ms=1234, enable_compression=True)
        assert c.base_url == server.base
        assert c.timeout_ms == 1234 and c.compression_enabled
        c.set_header("X-Request-ID", "abc123")
        assert c.get_headers() == {"X-Request-ID": "abc123"}
        c.remove_header("x-request-id")
        assert c.get_headers() == {}
        c.remove_header("never-set")

    def test_connection_refused(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        c = Client(f"http://127.0.0.1:{port}", timeout_ms=2000)
        with pytest.raises(ConnectionError):
            c.states()
        with pytest.raises(ConnectionError):
            list(c.stream("hi"))

    def test_timeout_on_a_silent_server(self) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)  # accepts connections, never answers
            port = listener.getsockname()[1]
            c = Client(f"http://127.0.0.1:{port}", timeout_ms=200)
            ticks = [0]
            done = threading.Event()

            def count() -> None:
                while not done.is_set():
                    ticks[0] += 1

            counter = threading.Thread(target=count)
            counter.start()
            t0 = time.monotonic()
            try:
                with pytest.raises(TimeoutError):
                    c.states()
            finally:
                done.set()
                counter.join()
            assert time.monotonic() - t0 < 5
            # Another Python thread ran while the call waited: no GIL held.
            assert ticks[0] > 1000

    def test_timeout_on_a_long_generation(self, server: Served) -> None:
        # Whether the server's deadline or the client's read notices first,
        # the caller sees a TimeoutError.
        with client(server, timeout_ms=1) as c:
            with pytest.raises(TimeoutError):
                c.generate("once upon a time", temperature=0)
        with client(server) as c:
            assert c.generate("hi", max_tokens=2).completion_tokens == 2

    def test_stream_outlasting_timeout_ms_completes(self, server: Served, want: str) -> None:
        # timeout_ms bounds the stream's silences, not its length: the reader
        # here is slow on purpose, so the stream outlasts timeout_ms whatever
        # the machine's speed, and still ends with all its tokens.
        timeout_ms = 500
        with client(server, timeout_ms=timeout_ms) as c:
            t0 = time.monotonic()
            batches = []
            for batch in c.stream(PROMPT, max_tokens=20, temperature=0):
                batches.append(batch)
                time.sleep(0.1)
            elapsed_ms = (time.monotonic() - t0) * 1000
        assert len(batches) > 6 and elapsed_ms > timeout_ms
        assert "".join(b.text() for b in batches) == want
        assert batches[-1].is_final and batches[-1].get_metadata("completion_tokens") == "20"

    def test_real_model_stream_outlasting_timeout_ms(self, tmp_path: Path) -> None:
        """The new-user trial's call: a short timeout on a stream of a real
        model that takes longer (on a 2-core machine) ran into a whole-call
        deadline; streams have none now, `timeout_ms` limits quiet time."""
        model = _model_cache() / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not model.exists():
            pytest.skip(f"{model} absent: fetch it with scripts/fetch_models.py")
        s = Served(model, "--ctx", "2048")
        try:
            # Page the weights in first: the quiet-time limit below is for
            # the stream, not for a cold start on a loaded machine.
            warm = Client(s.base, timeout_ms=60_000)
            warm.set_bearer_token(KEY)
            with warm:
                warm.generate("Story:", max_tokens=4, temperature=0)
            c = Client(s.base, timeout_ms=2500)
            c.set_bearer_token(KEY)
            with c:
                batches = list(c.stream("Story:", max_tokens=300, temperature=1.9, seed=7))
        finally:
            s.close()
        final = batches[-1]
        assert final.is_final
        n = sum(len(b) for b in batches[:-1])
        assert final.get_metadata("completion_tokens") == str(n) and n > 0

    def test_oversized_answers_are_refused(self, server: Served) -> None:
        c = Client(server.base, max_response_bytes=64)
        c.set_bearer_token(KEY)
        with pytest.raises(RpcError, match="max_response_bytes"):
            c.generate(PROMPT, max_tokens=20, temperature=0)


class TestNativeZstd:
    """The zstd functions the client uses."""

    def test_round_trip_and_bound(self) -> None:
        data = b"a" * 100_000
        packed = _native.zstd_compress(data)
        assert len(packed) < 1000
        assert _native.zstd_decompress(packed, 100_000) == data
        with pytest.raises(ValueError, match="max_size"):
            _native.zstd_decompress(packed, 99_999)
        with pytest.raises(ValueError, match="not a valid zstd"):
            _native.zstd_decompress(b"\x28\xb5\x2f\xfdjunk", 100)
        with pytest.raises(ValueError, match="levels"):
            _native.zstd_compress(b"x", 0)
