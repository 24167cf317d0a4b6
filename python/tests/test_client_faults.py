"""`ztensor.client.Client` against scripted fake servers.

What a real `zt serve` never sends, or only sends when it is slow: answers
that lack a field or are not JSON, stream messages that are not stream
messages, a stream that keeps producing for longer than `timeout_ms`, and
one that goes quiet. Each maps to the client's documented exceptions
(`RpcError`, a RuntimeError, for a bad answer; `TimeoutError` for silence;
`ValueError` for a closed client), never to a raw `KeyError` or
`json.JSONDecodeError`.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ztensor.client import Client, RpcError

# What a route does with one request: writes the whole answer.
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def envelope(obj: Any, flags: int = 0) -> bytes:
    """One Connect stream message (JSON, uncompressed).

    Args:
        obj: The message, or raw bytes to send as its payload.
        flags: Envelope flags (0x02 marks the end message).

    Returns:
        The framed message.
    """
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return bytes([flags]) + len(data).to_bytes(4, "big") + data


def token(i: int) -> dict[str, Any]:
    """A stream message holding one token."""
    return {"text": f"t{i}", "tokens": [{"id": i, "text": f"t{i}", "logprob": -0.5, "position": i}]}


SUMMARY = {"finish_reason": "length", "usage": {"prompt_tokens": 1, "completion_tokens": 3}}
END = envelope({}, 0x02)


def unary(answer: Any, status: int = 200) -> Route:
    """A route answering one JSON body (or raw bytes)."""
    body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def stream(*messages: bytes) -> Route:
    """A GenerateStream route sending these framed messages at once."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/connect+json")
        h.end_headers()
        for m in messages:
            h.wfile.write(m)
        h.wfile.flush()

    return route


class FakeServer:
    """An HTTP server on loopback whose answers are scripted per method.

    Attributes:
        routes: Method name (`'Generate'`, ...) to the route answering it.
        seen: The headers of every request, in order, as `(method, headers)`.
        base: The server's URL.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                method = self.path.rsplit("/", 1)[-1]
                fake.seen.append((method, {k.lower(): v for k, v in self.headers.items()}))
                fake.routes[method](self)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops the server."""
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


class TestStreamTimeout:
    """`timeout_ms` bounds a stream's silences, not its length."""

    def test_a_stream_longer_than_timeout_ms_that_keeps_producing_completes(
        self, fake: FakeServer
    ) -> None:
        # The fake sends its next token only after the client has read the
        # previous one and waited a tenth of timeout_ms, so the stream lasts
        # at least 15 tenths of it whatever the machine's speed, while no
        # gap between two messages comes near timeout_ms.
        n, timeout_ms = 16, 1000
        go = threading.Event()

        def paced(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/connect+json")
            h.end_headers()
            for i in range(n):
                if i > 0:
                    assert go.wait(30)
                    go.clear()
                h.wfile.write(envelope(token(i)))
                h.wfile.flush()
            h.wfile.write(envelope(SUMMARY) + END)

        fake.routes["GenerateStream"] = paced
        fake.routes["Generate"] = unary({"text": "x", "finish_reason": "stop", "usage": {}})
        with Client(fake.base, timeout_ms=timeout_ms) as c:
            t0 = time.monotonic()
            ids = []
            for batch in c.stream("x", max_tokens=n):
                ids += batch.token_ids()
                if not batch.is_final:
                    time.sleep(timeout_ms / 10_000)
                    go.set()
            elapsed_ms = (time.monotonic() - t0) * 1000
            c.generate("x")
        assert ids == list(range(n))
        assert elapsed_ms > timeout_ms
        (stream_method, stream_headers), (unary_method, unary_headers) = fake.seen
        assert stream_method == "GenerateStream" and unary_method == "Generate"
        # No whole-call deadline for a stream; a unary call keeps its own.
        assert "connect-timeout-ms" not in stream_headers
        assert unary_headers["connect-timeout-ms"] == str(timeout_ms)

    def test_a_server_gone_quiet_mid_stream_is_a_timeout(self, fake: FakeServer) -> None:
        release = threading.Event()

        def stalls(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/connect+json")
            h.end_headers()
            h.wfile.write(envelope(token(0)))
            h.wfile.flush()
            release.wait(30)

        fake.routes["GenerateStream"] = stalls
        try:
            with Client(fake.base, timeout_ms=300) as c:
                batches = c.stream("x")
                assert next(batches).token_ids() == [0]
                with pytest.raises(TimeoutError, match="stopped for 300 ms"):
                    next(batches)
        finally:
            release.set()

    def test_a_server_silent_after_its_headers_is_a_timeout(self, fake: FakeServer) -> None:
        release = threading.Event()

        def silent(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/connect+json")
            h.end_headers()
            h.wfile.flush()
            release.wait(30)

        fake.routes["GenerateStream"] = silent
        try:
            with Client(fake.base, timeout_ms=300) as c:
                with pytest.raises(TimeoutError):
                    list(c.stream("x"))
        finally:
            release.set()


class TestUnaryDeadline:
    """The server's `deadline_exceeded` is the client's own timeout."""

    def test_deadline_exceeded_is_a_timeout_error(self, fake: FakeServer) -> None:
        fake.routes["Generate"] = unary(
            {"code": "deadline_exceeded", "message": "the 700-ms deadline passed"}, status=504
        )
        with Client(fake.base, timeout_ms=700) as c:
            with pytest.raises(TimeoutError, match="within 700 ms") as e:
                c.generate("x")
        cause = e.value.__cause__
        assert isinstance(cause, RpcError) and cause.code == "deadline_exceeded"
        assert fake.seen[0][1]["connect-timeout-ms"] == "700"

    def test_other_server_errors_stay_rpc_errors(self, fake: FakeServer) -> None:
        fake.routes["Generate"] = unary({"code": "unavailable", "message": "busy"}, status=503)
        with Client(fake.base, timeout_ms=700) as c:
            with pytest.raises(RpcError, match="unavailable: busy") as e:
                c.generate("x")
        assert e.value.http_status == 503


class TestMalformedAnswers:
    """A bad answer is an `RpcError` (code `internal`) naming what is wrong."""

    @pytest.mark.parametrize(
        ("messages", "match"),
        [
            ((envelope(b"{not json"),), "GenerateStream answer is malformed"),
            ((b'\x00\x00\x00\x00\x05{"to}',), "GenerateStream answer is malformed"),
            ((envelope([1, 2]),), "not a JSON object"),
            ((envelope({"tokens": [{"id": 1}]}),), "has no field 'logprob'"),
            ((envelope({"tokens": "abc"}),), "not a list"),
            (
                (envelope({"tokens": [{"id": "1", "position": 0, "text": "", "logprob": 0}]}),),
                "not an integer",
            ),
            ((END,), "has no field 'finish_reason'"),
            ((envelope({"error": "boom"}, 0x02),), "malformed"),
            ((envelope(SUMMARY), envelope({"error": {"code": "aborted"}}, 0x02)), "aborted"),
        ],
    )
    def test_bad_stream_messages(
        self, fake: FakeServer, messages: tuple[bytes, ...], match: str
    ) -> None:
        fake.routes["GenerateStream"] = stream(*messages)
        with Client(fake.base, timeout_ms=5000) as c:
            with pytest.raises(RpcError, match=match) as e:
                list(c.stream("x"))
        assert isinstance(e.value, RuntimeError)
        assert e.value.http_status == 200

    def test_a_null_logprob_is_minus_infinity(self, fake: FakeServer) -> None:
        # serde_json writes a non-finite float as null.
        t = {"id": 3, "position": 0, "text": "a", "logprob": None}
        fake.routes["GenerateStream"] = stream(
            envelope({"text": "a", "tokens": [t]}), envelope(SUMMARY), END
        )
        with Client(fake.base, timeout_ms=5000) as c:
            first = next(iter(c.stream("x")))
        assert first.token_ids() == [3] and list(first)[0].logprob == float("-inf")

    @pytest.mark.parametrize(
        ("method", "answer", "call", "match"),
        [
            ("Interrupt", {}, lambda c: c.interrupt("e1"), "Interrupt answer has no field"),
            ("Interrupt", {"interrupted": "yes"}, lambda c: c.interrupt("e1"), "not a boolean"),
            ("ListStates", {}, lambda c: c.states(), "ListStates answer has no field 'states'"),
            ("ListStates", {"states": "initial"}, lambda c: c.states(), "not a list"),
            ("ListStates", {"states": [1]}, lambda c: c.states(), "not a string"),
            ("Tokenize", {"tokens": ["a"]}, lambda c: c.tokenize("x"), "not an integer"),
            ("Detokenize", {}, lambda c: c.detokenize([1]), "no field 'content'"),
            ("Generate", {}, lambda c: c.generate("x"), "Generate answer has no field 'text'"),
            (
                "Generate",
                {"text": "x", "finish_reason": "stop", "usage": {"prompt_tokens": "3"}},
                lambda c: c.generate("x"),
                "not an integer",
            ),
            ("Generate", {"text": "x", "finish_reason": "stop", "usage": 3}, None, "malformed"),
            ("Execute", {}, lambda c: c.execute("initial", "x"), "no field 'exec_id'"),
            ("Execute", {"exec_id": "e", "error": 5}, None, "Execute answer is malformed"),
            ("ListStates", b"<html>hi</html>", lambda c: c.states(), "not JSON"),
            ("ListStates", b"[" * 100_000, lambda c: c.states(), "not JSON"),
            ("ListStates", [1], lambda c: c.states(), "not a JSON object"),
        ],
    )
    def test_bad_unary_answers(
        self,
        fake: FakeServer,
        method: str,
        answer: Any,
        call: Callable[[Client], Any] | None,
        match: str,
    ) -> None:
        default: dict[str, Callable[[Client], Any]] = {
            "Generate": lambda c: c.generate("x"),
            "Execute": lambda c: c.execute("initial", "x"),
        }
        fake.routes[method] = unary(answer)
        with Client(fake.base, timeout_ms=5000) as c:
            with pytest.raises(RpcError, match=match) as e:
                (call or default[method])(c)
        assert e.value.code == "internal" and isinstance(e.value, RuntimeError)

    def test_well_formed_answers_still_parse(self, fake: FakeServer) -> None:
        fake.routes["Interrupt"] = unary({"interrupted": False})
        fake.routes["ListStates"] = unary({"states": ["initial", "a"]})
        fake.routes["Execute"] = unary(
            {
                "exec_id": "e",
                "output": "hi",
                "state_name": "s",
                "error": None,
                "finish_reason": "length",
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
            }
        )
        with Client(fake.base, timeout_ms=5000) as c:
            assert c.interrupt("e") is False
            assert c.states() == ["initial", "a"]
            x = c.execute("initial", "x")
        assert (x.exec_id, x.output, x.state_name, x.finish_reason) == ("e", "hi", "s", "length")
        assert x.usage == {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}


class TestClosedClient:
    """Calls on a closed client raise a `ValueError` saying so."""

    def test_every_call_after_close(self, fake: FakeServer) -> None:
        fake.routes["ListStates"] = unary({"states": ["initial"]})
        c = Client(fake.base)
        assert c.states() == ["initial"]
        c.close()
        c.close()  # twice is fine
        for call in (
            lambda: c.states(),
            lambda: c.call("ztensor.v1.Engine", "ListStates", b"{}"),
            lambda: c.stream("x"),  # at the call, before iterating
            lambda: c.generate("x"),
        ):
            with pytest.raises(ValueError, match="Client of .* is closed"):
                call()
        with Client(fake.base) as d:
            pass
        with pytest.raises(ValueError, match="closed"):
            d.states()

    def test_a_stream_iterated_after_close(self, fake: FakeServer) -> None:
        # The request is sent when iteration starts: after close() that is
        # the same caller error as any other call, not a ConnectionError.
        c = Client(fake.base)
        it = c.stream("x")
        c.close()
        with pytest.raises(ValueError, match="Client of .* is closed"):
            next(iter(it))
