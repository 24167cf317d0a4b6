"""`Client`: calls a `zt serve` server over its Connect-protocol routes.

`call`/`call_json` make unary calls to any `service/method`
(`ztensor.v1.Engine/Generate`, ...) with the JSON codec; typed helpers
wrap the engine's methods. Bodies are zstd-compressed both ways when
compression is on. Built on httpx: its blocking socket calls (and the
native zstd code) release the GIL, so other Python threads run while a
call waits on the network.

Errors are standard exceptions: `ConnectionError` (server unreachable or
the connection broke), `TimeoutError` (no answer within `timeout_ms`; for a
stream, no bytes for `timeout_ms`), `RuntimeError` (the server answered with
an error, or with an answer that is not the method's message: an `RpcError`
carrying its Connect code) and `ValueError` (bad input on the client's side,
including a call on a closed client).

Example:
    >>> from ztensor.client import Client
    >>> client = Client("http://127.0.0.1:8080")
    >>> client.set_bearer_token("my-key")
    >>> client.generate("Once upon a time", max_tokens=16, temperature=0).text
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ._native import zstd_compress, zstd_decompress
from .engine import Token, TokenBatch

SERVICE: str = "ztensor.v1.Engine"
DEFAULT_MAX_RESPONSE_BYTES: int = 64 << 20

_SERVICE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_METHOD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the client sets itself on every call.
_RESERVED = {"content-type", "content-encoding", "accept-encoding", "content-length", "host"}
_END_STREAM = 0x02
_COMPRESSED = 0x01


class RpcError(RuntimeError):
    """An error answered by the server.

    Attributes:
        code: The Connect error code (`'invalid_argument'`,
            `'unauthenticated'`, `'not_found'`, ...).
        message: The server's message.
        http_status: The HTTP status of the answer (200 for stream errors).
    """

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(f"{code}: {message} (HTTP {http_status})")
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class Generation:
    """The result of `Client.generate`.

    Attributes:
        text: The generated text.
        finish_reason: `'stop'` (end of sequence or a stop string) or
            `'length'` (`max_tokens` or the context is full).
        prompt_tokens: Tokens of the prompt.
        completion_tokens: Tokens generated.
        id: The server's id of the request.
        logprobs: Log-probabilities as the server reports them, if asked.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    id: str
    logprobs: Any = None


@dataclass(frozen=True)
class Execution:
    """The result of `Client.execute` (seed 001's shape).

    Attributes:
        exec_id: The execution's id.
        output: The generated text.
        state_name: The new state's name, or None when nothing was stored.
        error: `{'ename', 'evalue'}` when the run failed or was interrupted.
        finish_reason: How generation ended, or None if it never ran.
        usage: Token counts (`prompt_tokens`, `completion_tokens`, ...).
    """

    exec_id: str
    output: str
    state_name: str | None
    error: dict[str, Any] | None
    finish_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def _answer(method: str) -> Iterator[None]:
    """Turns a server answer that lacks a field or has one of the wrong kind
    into an `RpcError` (code `internal`) naming the method, instead of the
    `KeyError`/`TypeError`/`ValueError` its parsing would raise."""
    try:
        yield
    except KeyError as e:
        raise RpcError("internal", f"the {method} answer has no field {e}", 200) from None
    except (TypeError, ValueError, AttributeError, RecursionError) as e:
        raise RpcError("internal", f"the {method} answer is malformed: {e}", 200) from None


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not a string")
    return v


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{v!r} is not an integer")
    return v


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise ValueError(f"{v!r} is not a list")
    return v


def _token(t: Any) -> Token:
    """One token of a stream message."""
    lp = t["logprob"]
    # JSON has no -inf: the server writes a non-finite logprob as null.
    logprob = float("-inf") if lp is None else lp
    if isinstance(logprob, bool) or not isinstance(logprob, (int, float)):
        raise ValueError(f"logprob {lp!r} is not a number")
    return Token(
        id=_count(t["id"]),
        position=_count(t["position"]),
        text=_text(t["text"]),
        logprob=float(logprob),
    )


def _check_base_url(base_url: str) -> str:
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a string, not {type(base_url).__name__}")
    url = base_url.rstrip("/")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise ValueError(f"base_url {base_url!r} is not a URL: {e}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base_url {base_url!r} must be an http:// or https:// URL with a host")
    return url


def _check_timeout(timeout_ms: int) -> int:
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise ValueError(f"timeout_ms must be an integer, not {timeout_ms!r}")
    if not 1 <= timeout_ms <= 9_999_999_999:
        raise ValueError(f"timeout_ms = {timeout_ms} is outside 1..9999999999")
    return timeout_ms


class Client:
    """A client of a `zt serve` server's Connect routes.

    Args:
        base_url: The server's URL, e.g. `http://127.0.0.1:8080`.
        timeout_ms: Longest wait (connect, and each read of the answer). A
            unary call also sends it as its server-side deadline
            (`Connect-Timeout-Ms`); a stream does not: it runs as long as
            the server keeps sending, and times out only when the server
            goes quiet for `timeout_ms`.
        enable_compression: zstd request bodies and zstd answers.
        max_response_bytes: Largest answer accepted (after decompression).

    Raises:
        ValueError: A bad URL, timeout or size.
    """

    def __init__(
        self,
        base_url: str,
        timeout_ms: int = 30000,
        enable_compression: bool = False,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._base_url = _check_base_url(base_url)
        self._timeout_ms = _check_timeout(timeout_ms)
        self._compression = bool(enable_compression)
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes = {max_response_bytes} must be positive")
        self._max_response = int(max_response_bytes)
        self._headers: dict[str, str] = {}
        self._http = httpx.Client(timeout=self._timeout_ms / 1000, trust_env=False)
        self._closed = False

    # -- properties and headers ------------------------------------------

    @property
    def base_url(self) -> str:
        """The server's URL."""
        return self._base_url

    @property
    def timeout_ms(self) -> int:
        """The timeout in milliseconds: a unary call's deadline, a stream's
        longest silence."""
        return self._timeout_ms

    @property
    def compression_enabled(self) -> bool:
        """Whether bodies are zstd-compressed."""
        return self._compression

    def set_bearer_token(self, token: str) -> None:
        """Sends `Authorization: Bearer TOKEN` on every call.

        Args:
            token: The token (the server's API key).

        Raises:
            ValueError: The token is empty or not visible ASCII.
        """
        self.set_header("Authorization", f"Bearer {self._check_value(token, 'token')}")

    def set_api_key(self, key: str, header_name: str = "X-API-Key") -> None:
        """Sends the API key in a header on every call.

        Args:
            key: The key.
            header_name: The header to send it in.

        Raises:
            ValueError: A bad key or header name.
        """
        self.set_header(header_name, self._check_value(key, "key"))

    def set_header(self, name: str, value: str) -> None:
        """Sends a header on every call (replacing one of the same name).

        Args:
            name: Header name.
            value: Header value (visible ASCII and spaces).

        Raises:
            ValueError: A bad name or value, or a header the client sets
                itself (Content-Type, Content-Encoding, Accept-Encoding, ...).
        """
        if not isinstance(name, str) or not _HEADER_RE.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if name.lower() in _RESERVED:
            raise ValueError(f"header {name!r} is set by the client itself")
        value = self._check_value(value, f"header {name!r}", allow_empty=True)
        self.remove_header(name)
        self._headers[name] = value

    def remove_header(self, name: str) -> None:
        """Stops sending a header (any letter case); absent names are ignored.

        Args:
            name: Header name.
        """
        for k in [k for k in self._headers if k.lower() == str(name).lower()]:
            del self._headers[k]

    def get_headers(self) -> dict[str, str]:
        """The headers sent on every call.

        Returns:
            A copy of the headers.
        """
        return dict(self._headers)

    @staticmethod
    def _check_value(value: str, what: str, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{what} must be a string, not {type(value).__name__}")
        if not value and not allow_empty:
            raise ValueError(f"{what} is empty")
        if any(not (32 <= ord(c) < 127) for c in value):
            raise ValueError(f"{what} must be visible ASCII (no control or non-ASCII characters)")
        return value

    # -- calls --------------------------------------------------------------

    def _url(self, service: str, method: str) -> str:
        if not isinstance(service, str) or not _SERVICE_RE.match(service):
            raise ValueError(f"service {service!r} is not a dotted name like 'ztensor.v1.Engine'")
        if not isinstance(method, str) or not _METHOD_RE.match(method):
            raise ValueError(f"method {method!r} is not a name like 'Generate'")
        return f"{self._base_url}/{service}/{method}"

    def _request_headers(self, streaming: bool) -> dict[str, str]:
        h = dict(self._headers)
        h["Connect-Protocol-Version"] = "1"
        if not streaming:
            # A stream's timeout is an inactivity bound kept by the reads
            # (httpx's read timeout); a whole-call deadline would cut off a
            # stream that is still producing.
            h["Connect-Timeout-Ms"] = str(self._timeout_ms)
        enc = "zstd" if self._compression else "identity"
        if streaming:
            h["Content-Type"] = "application/connect+json"
            h["Connect-Accept-Encoding"] = enc
            if self._compression:
                h["Connect-Content-Encoding"] = "zstd"
            h["Accept-Encoding"] = "identity"
        else:
            h["Content-Type"] = "application/json"
            h["Accept-Encoding"] = enc
            if self._compression:
                h["Content-Encoding"] = "zstd"
        return h

    def _read(self, response: httpx.Response) -> bytes:
        """The raw body, refused once it passes the size bound."""
        chunks = []
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self._max_response:
                raise RpcError(
                    "resource_exhausted",
                    f"the answer is larger than max_response_bytes = {self._max_response}",
                    response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, raw: bytes, encoding: str, status: int) -> bytes:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding != "zstd":
            raise RpcError("internal", f"the server sent Content-Encoding {encoding!r}", status)
        try:
            return zstd_decompress(raw, self._max_response)
        except ValueError as e:
            raise RpcError("internal", f"the answer's zstd body: {e}", status) from None

    @staticmethod
    def _error(status: int, body: bytes) -> RpcError:
        try:
            err = json.loads(body)
            code, message = str(err["code"]), str(err.get("message", ""))
        except (ValueError, TypeError, KeyError, RecursionError):
            code = {401: "unauthenticated", 404: "unimplemented", 503: "unavailable"}.get(
                status, "unknown"
            )
            message = body[:200].decode("utf-8", "replace")
        return RpcError(code, message, status)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(
                f"this Client of {self._base_url} is closed (close() or its with-block ended); "
                "make a new Client"
            )

    def _send(self, url: str, body: bytes, streaming: bool) -> Any:
        """Opens the request; transport failures become builtin errors."""
        self._check_open()
        request = self._http.build_request(
            "POST", url, content=body, headers=self._request_headers(streaming)
        )
        try:
            return self._http.send(request, stream=True)
        except httpx.TimeoutException as e:
            raise TimeoutError(f"no answer from {url} within {self._timeout_ms} ms") from e
        except httpx.TransportError as e:
            raise ConnectionError(f"cannot reach {url}: {e}") from e

    def call(self, service: str, method: str, body: bytes) -> bytes:
        """Makes a unary call with a JSON body.

        Args:
            service: The service, e.g. `'ztensor.v1.Engine'`.
            method: The method, e.g. `'Generate'`.
            body: The request message (JSON bytes).

        Returns:
            The answer's message (JSON bytes, decompressed).

        Raises:
            ValueError: Bad service/method names, a body that is not bytes,
                or the client is closed.
            ConnectionError: The server cannot be reached or hung up.
            TimeoutError: No answer within `timeout_ms` (also when the
                server answers that this deadline passed: the `RpcError`
                `deadline_exceeded` is its `__cause__`).
            RpcError: The server answered with an error (a RuntimeError).
        """
        url = self._url(service, method)
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise ValueError(f"body must be bytes, not {type(body).__name__}")
        payload = bytes(body)
        if self._compression:
            payload = zstd_compress(payload)
        response = self._send(url, payload, streaming=False)
        try:
            raw = self._read(response)
        except httpx.TimeoutException as e:
            raise TimeoutError(f"the answer from {url} stopped for {self._timeout_ms} ms") from e
        except httpx.TransportError as e:
            raise ConnectionError(f"the connection to {url} broke: {e}") from e
        finally:
            response.close()
        status = response.status_code
        data = self._decode(raw, response.headers.get("content-encoding", ""), status)
        if status != 200:
            error = self._error(status, data)
            if error.code == "deadline_exceeded":
                # The deadline is our own timeout_ms (Connect-Timeout-Ms): the
                # server noticing it first is the same timeout as our read
                # noticing it first, so both are a TimeoutError.
                raise TimeoutError(
                    f"no answer from {url} within {self._timeout_ms} ms ({error.message})"
                ) from error
            raise error
        return data

    def call_json(self, service: str, method: str, obj: Any) -> dict[str, Any]:
        """Makes a unary call with a JSON-serializable request.

        Args:
            service: The service, e.g. `'ztensor.v1.Engine'`.
            method: The method, e.g. `'Generate'`.
            obj: The request (a dict, usually).

        Returns:
            The answer, parsed.

        Raises:
            ValueError: `obj` cannot be serialized, bad names, or the client
                is closed.
            ConnectionError: The server cannot be reached or hung up.
            TimeoutError: No answer within `timeout_ms`.
            RpcError: The server answered with an error, or not with a
                JSON object (a RuntimeError).
        """
        try:
            body = json.dumps(obj, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"the request cannot be sent as JSON: {e}") from None
        data = self.call(service, method, body)
        try:
            answer = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise RpcError("internal", f"the answer is not JSON: {e}", 200) from None
        if not isinstance(answer, dict):
            raise RpcError("internal", "the answer is not a JSON object", 200)
        return answer

    # -- typed helpers ------------------------------------------------------

    @staticmethod
    def _request(
        prompt: str | None, messages: list[dict[str, Any]] | None, **fields: Any
    ) -> dict[str, Any]:
        if (prompt is None) == (messages is None):
            raise ValueError("give either prompt or messages")
        req: dict[str, Any] = {"prompt": prompt} if prompt is not None else {"messages": messages}
        req.update({k: v for k, v in fields.items() if v is not None})
        return req

    def generate(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        grammar: str | None = None,
    ) -> Generation:
        """Generates a completion of a prompt, or a chat reply to messages.

        Args:
            prompt: Text to continue (a fresh context).
            messages: Chat messages (`{'role', 'content'}`), formatted with
                the model's chat template.
            max_tokens: Most tokens to generate (default: all that fit).
            temperature: 0 is greedy; OpenAI's range [0, 2].
            top_p: Nucleus sampling, (0, 1].
            seed: Sampling seed.
            stop: Up to 4 stop strings.
            json_schema: Constrain the output to JSON valid under this
                schema (compiled to a grammar by the server).
            grammar: Constrain the output to this GBNF grammar (llama.cpp's
                format); at most one of `json_schema` and `grammar`.

        Returns:
            The generation.

        Raises:
            ValueError: Neither or both of prompt and messages, or the client
                is closed.
            RpcError: The server refused the request (e.g. `invalid_argument`),
                or its answer is not a Generate answer (`internal`).
            ConnectionError: The server cannot be reached.
            TimeoutError: No answer within `timeout_ms`.
        """
        req = self._request(
            prompt,
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            json_schema=json_schema,
            grammar=grammar,
        )
        a = self.call_json(SERVICE, "Generate", req)
        with _answer("Generate"):
            usage = a.get("usage") or {}
            return Generation(
                text=_text(a["text"]),
                finish_reason=_text(a["finish_reason"]),
                prompt_tokens=_count(usage.get("prompt_tokens", 0)),
                completion_tokens=_count(usage.get("completion_tokens", 0)),
                id=str(a.get("id", "")),
                logprobs=a.get("logprobs"),
            )

    def stream(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        grammar: str | None = None,
    ) -> Iterator[TokenBatch]:
        """Generates like `generate`, yielding tokens as the server releases
        them (Connect server streaming, `ztensor.v1.Engine/GenerateStream`).

        Each batch holds the tokens that released a piece of text; the
        piece's text is on the batch's last token, so the batches' texts
        concatenate to the output. The last batch is empty, `is_final`, with
        metadata `finish_reason`, `prompt_tokens` and `completion_tokens`.
        Leaving the loop early closes the connection, which stops the run.

        Args:
            prompt: Text to continue (a fresh context).
            messages: Chat messages instead of a prompt.
            max_tokens: Most tokens to generate.
            temperature: 0 is greedy.
            top_p: Nucleus sampling.
            seed: Sampling seed.
            stop: Up to 4 stop strings.
            json_schema: Constrain the output to JSON valid under this
                schema (compiled to a grammar by the server).
            grammar: Constrain the output to this GBNF grammar (llama.cpp's
                format); at most one of `json_schema` and `grammar`.

        Returns:
            An iterator of `TokenBatch` objects of `Token`s (id, text,
            logprob, position); the request is sent when iteration starts.

        Raises:
            ValueError: Neither or both of prompt and messages, or the client
                is closed (at once, when iteration starts, or when it is
                closed during the stream).
            RpcError: The server refused or failed the run, or sent a
                message that is not a stream message (`internal`).
            ConnectionError: The server cannot be reached or hung up.
            TimeoutError: The server went quiet for `timeout_ms` (a stream
                has no overall deadline: it runs while tokens keep coming).
        """
        req = self._request(
            prompt,
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            json_schema=json_schema,
            grammar=grammar,
        )
        url = self._url(SERVICE, "GenerateStream")
        try:
            message = json.dumps(req, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"the request cannot be sent as JSON: {e}") from None
        flags = 0
        if self._compression:
            message, flags = zstd_compress(message), _COMPRESSED
        body = bytes([flags]) + len(message).to_bytes(4, "big") + message
        self._check_open()
        return self._stream(url, body)

    def _stream(self, url: str, body: bytes) -> Iterator[TokenBatch]:
        """Sends a stream request once iterated; closes it when done."""
        # Iteration may start (or go on) after close(): that is the
        # caller's error, as for every other call on a closed client.
        self._check_open()
        response = self._send(url, body, streaming=True)
        try:
            if response.status_code != 200:
                raw = self._read(response)
                enc = response.headers.get("content-encoding", "")
                raise self._error(response.status_code, self._decode(raw, enc, 200))
            yield from self._batches(response)
        except httpx.TimeoutException as e:
            raise TimeoutError(f"the stream from {url} stopped for {self._timeout_ms} ms") from e
        except httpx.TransportError as e:
            self._check_open()
            raise ConnectionError(f"the stream from {url} broke: {e}") from e
        finally:
            response.close()

    def _batches(self, response: httpx.Response) -> Iterator[TokenBatch]:
        buf = bytearray()
        chunks = response.iter_raw()
        summary: dict[str, Any] = {}
        while True:
            while len(buf) < 5:
                chunk = next(chunks, None)
                if chunk is None:
                    raise ConnectionError("the stream ended before its end message")
                buf += chunk
            flags, size = buf[0], int.from_bytes(buf[1:5], "big")
            if size > self._max_response:
                raise RpcError(
                    "resource_exhausted",
                    f"a stream message of {size} bytes is larger than max_response_bytes",
                    200,
                )
            while len(buf) < 5 + size:
                chunk = next(chunks, None)
                if chunk is None:
                    raise ConnectionError("the stream ended inside a message")
                buf += chunk
            data = bytes(buf[5 : 5 + size])
            del buf[: 5 + size]
            if flags & _COMPRESSED:
                data = self._decode(data, "zstd", 200)
            with _answer("GenerateStream"):
                msg = json.loads(data)
                if not isinstance(msg, dict):
                    raise ValueError("a stream message is not a JSON object")
                if flags & _END_STREAM:
                    if msg.get("error"):
                        err = dict(msg["error"])
                        raise RpcError(str(err.get("code")), str(err.get("message", "")), 200)
                    usage = dict(summary.get("usage") or {})
                    batch = TokenBatch(is_final=True)
                    batch.set_metadata("finish_reason", _text(summary["finish_reason"]))
                    for k in ("prompt_tokens", "completion_tokens"):
                        batch.set_metadata(k, str(_count(usage.get(k, 0))))
                elif "tokens" not in msg:
                    summary = msg
                    continue
                else:
                    batch = TokenBatch.from_tokens([_token(t) for t in _list(msg["tokens"])])
            yield batch
            if batch.is_final:
                return

    def execute(
        self,
        state_name: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        new_state_name: str | None = None,
        exec_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        grammar: str | None = None,
    ) -> Execution:
        """Continues a named state; on success the result is stored as a new
        (immutable) state.

        Args:
            state_name: The state to continue (`'initial'` is empty).
            prompt: Text to append.
            messages: Chat messages to append instead.
            new_state_name: The new state's name (default: a fresh one).
            exec_id: Id for `interrupt` (default: a fresh one).
            max_tokens: Most tokens to generate.
            temperature: 0 is greedy.
            top_p: Nucleus sampling.
            seed: Sampling seed.
            stop: Up to 4 stop strings.
            json_schema: Constrain the output to JSON valid under this
                schema (compiled to a grammar by the server).
            grammar: Constrain the output to this GBNF grammar (llama.cpp's
                format); at most one of `json_schema` and `grammar`.

        Returns:
            The execution; `error` is set (and nothing stored) when the run
            failed or was interrupted.

        Raises:
            ValueError: Neither or both of prompt and messages, or the client
                is closed.
            RpcError: Refused before running (unknown state, existing name...),
                or an answer that is not an Execute answer (`internal`).
            ConnectionError: The server cannot be reached.
            TimeoutError: No answer within `timeout_ms`.
        """
        req = self._request(
            prompt,
            messages,
            exec_id=exec_id or f"py-{uuid.uuid4().hex}",
            state_name=state_name,
            new_state_name=new_state_name,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            json_schema=json_schema,
            grammar=grammar,
        )
        a = self.call_json(SERVICE, "Execute", req)
        with _answer("Execute"):
            state = a.get("state_name")
            error = a.get("error")
            finish = a.get("finish_reason")
            return Execution(
                exec_id=_text(a["exec_id"]),
                output=_text(a.get("output", "")),
                state_name=None if state is None else _text(state),
                error=None if error is None else dict(error),
                finish_reason=None if finish is None else _text(finish),
                # Token counts; entries that are not counts (none today) are left out.
                usage={
                    str(k): v
                    for k, v in dict(a.get("usage") or {}).items()
                    if isinstance(v, int) and not isinstance(v, bool)
                },
            )

    def states(self) -> list[str]:
        """The names of the server's states.

        Returns:
            State names.

        Raises:
            RpcError: The server refused the call, or its answer has no list
                of names `states` (`internal`).
            ConnectionError: The server cannot be reached.
            TimeoutError: No answer within `timeout_ms`.
            ValueError: The client is closed.
        """
        a = self.call_json(SERVICE, "ListStates", {})
        with _answer("ListStates"):
            return [_text(s) for s in _list(a["states"])]

    def get_state(self, name: str) -> dict[str, Any]:
        """One state's details.

        Args:
            name: State name.

        Returns:
            `{name, tokens_count, created, text_tail}`.

        Raises:
            RpcError: `not_found`, or a bad name (`invalid_argument`).
        """
        return self.call_json(SERVICE, "GetState", {"name": name})

    def delete_state(self, name: str) -> None:
        """Deletes a state.

        Args:
            name: State name.

        Raises:
            RpcError: `not_found`, or a bad name (`invalid_argument`).
        """
        self.call_json(SERVICE, "DeleteState", {"name": name})

    def interrupt(self, exec_id: str) -> bool:
        """Stops a running execution between two tokens.

        Args:
            exec_id: The execution's id.

        Returns:
            True if it was running.

        Raises:
            RpcError: A malformed id (`invalid_argument`), or an answer
                without a boolean `interrupted` (`internal`).
        """
        a = self.call_json(SERVICE, "Interrupt", {"exec_id": exec_id})
        with _answer("Interrupt"):
            interrupted = a["interrupted"]
            if not isinstance(interrupted, bool):
                raise ValueError(f"'interrupted' = {interrupted!r} is not a boolean")
            return interrupted

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """The model's token ids of a text.

        Args:
            text: The text.
            add_special: Prepend the BOS token if the model uses one.

        Returns:
            Token ids.

        Raises:
            RpcError: The server refused the call, or its answer has no list
                of ids `tokens` (`internal`).
        """
        a = self.call_json(SERVICE, "Tokenize", {"content": text, "add_special": add_special})
        with _answer("Tokenize"):
            return [_count(t) for t in _list(a["tokens"])]

    def detokenize(self, ids: list[int]) -> str:
        """The text of token ids.

        Args:
            ids: Token ids.

        Returns:
            The text.

        Raises:
            ValueError: `ids` is not a list of ids.
            RpcError: An id outside the vocabulary (`invalid_argument`), or
                an answer without a string `content` (`internal`).
        """
        try:
            tokens = list(ids)
        except TypeError:
            raise ValueError(f"ids must be a list of token ids, not {type(ids).__name__}") from None
        a = self.call_json(SERVICE, "Detokenize", {"tokens": tokens})
        with _answer("Detokenize"):
            return _text(a["content"])

    def close(self) -> None:
        """Closes the connection pool; later calls raise `ValueError`
        (closing twice is fine)."""
        self._closed = True
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ztensor.client.Client {self._base_url!r}>"
