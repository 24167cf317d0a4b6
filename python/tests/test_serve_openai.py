"""`zt serve` driven by the official `openai` package, unchanged.

A real `zt serve` process is started on a free loopback port with a fixture
model; greedy output through the client equals `ztensor.Engine.generate`
for the same prompt.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest

from ztensor.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("ZT_FIXTURES", ROOT.parent / "shared" / "fixtures"))
KEY = "py-test-key"


def _zt_binary() -> Path:
    """The `zt` binary to run (ZT_BIN, else the ci or release build).

    Returns:
        The path of the binary.
    """
    if "ZT_BIN" in os.environ:
        return Path(os.environ["ZT_BIN"])
    for profile in ("ci", "release", "debug"):
        p = ROOT / "target" / profile / "zt"
        if p.exists():
            return p
    pytest.fail("no zt binary: build it (cargo build --profile ci) or set ZT_BIN")


class Served:
    """A running `zt serve` process and its base URL."""

    def __init__(self, model: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(_zt_binary()), "serve", str(model), "--bind", "127.0.0.1:0"]
            + ["--api-key", KEY, "--threads", "1", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.base = line.removeprefix("listening on ")
        client = openai.OpenAI(base_url=self.base + "/v1", api_key=KEY, max_retries=30)
        # /v1/models answers 503 until the model is loaded; the client retries.
        client.models.list()

    def client(self, key: str = KEY) -> openai.OpenAI:
        """A client for this server.

        Args:
            key: The API key to send.

        Returns:
            An `openai.OpenAI` client.
        """
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0)

    def close(self) -> None:
        """Stops the server."""
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def llama() -> Iterator[Served]:
    s = Served(FIXTURES / "gguf" / "llama-tiny-q8_0.gguf")
    yield s
    s.close()


@pytest.fixture(scope="module")
def qwen() -> Iterator[Served]:
    s = Served(FIXTURES / "gguf" / "qwen2-tiny-bpe-f32.gguf")
    yield s
    s.close()


class TestOpenAIClient:
    """The official client against `zt serve`."""

    def test_models_lists_the_model(self, llama: Served) -> None:
        ids = [m.id for m in llama.client().models.list().data]
        assert ids == ["llama-tiny-q8_0"]

    def test_completion_equals_engine_generate(self, llama: Served) -> None:
        prompt = "hello world, the quick brown fox"
        want = Engine(FIXTURES / "gguf" / "llama-tiny-q8_0.gguf").generate(
            prompt, max_tokens=20, temperature=0.0
        )
        c = llama.client().completions.create(
            model="llama-tiny-q8_0", prompt=prompt, max_tokens=20, temperature=0
        )
        assert c.choices[0].text == want
        assert c.choices[0].finish_reason == "length"
        assert c.usage is not None and c.usage.completion_tokens == 20

        stream = llama.client().completions.create(
            model="x", prompt=prompt, max_tokens=20, temperature=0, stream=True
        )
        chunks = list(stream)
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == want
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"

    def test_seeded_sampling_repeats(self, llama: Served) -> None:
        def run(seed: int) -> str:
            c = llama.client().completions.create(
                model="x",
                prompt="the",
                max_tokens=16,
                temperature=1.0,
                top_p=0.9,
                seed=seed,
            )
            return c.choices[0].text

        assert run(5) == run(5)

    def test_chat_plain_and_streamed(self, qwen: Served) -> None:
        messages = [{"role": "user", "content": "hello <|im_start|> there"}]
        c = qwen.client().chat.completions.create(
            model="x", messages=messages, max_tokens=10, temperature=0  # type: ignore[arg-type]
        )
        text = c.choices[0].message.content
        assert c.choices[0].message.role == "assistant"
        assert c.choices[0].finish_reason in ("stop", "length")
        stream = qwen.client().chat.completions.create(
            model="x",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == c.usage.prompt_tokens  # type: ignore[union-attr]

    def test_errors_map_to_client_exceptions(self, llama: Served) -> None:
        with pytest.raises(openai.AuthenticationError):
            llama.client("wrong").completions.create(model="x", prompt="hi", max_tokens=2)
        with pytest.raises(openai.BadRequestError) as e:
            llama.client().completions.create(model="x", prompt="hi", max_tokens=100000)
        assert "max_tokens" in str(e.value)
        with pytest.raises(openai.BadRequestError):
            llama.client().completions.create(model="x", prompt="hi", temperature=9)


SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "integer", "minimum": 0, "maximum": 99},
        "ok": {"type": "boolean"},
    },
    "required": ["color", "size", "ok"],
    "additionalProperties": False,
}


class TestConstrainedOutput:
    """`response_format`, and llama-server's `grammar`, through the client."""

    def test_json_schema_output_validates(self, qwen: Served) -> None:
        for seed in range(3):
            c = qwen.client().chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "describe it"}],
                # A random-weight model spends many tokens on the blanks
                # the grammar allows between JSON tokens.
                max_tokens=100,
                temperature=1.0,
                seed=seed,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True},
                },
            )
            assert c.choices[0].finish_reason == "stop"
            text = c.choices[0].message.content or ""
            jsonschema.validate(json.loads(text), SCHEMA)

    def test_json_object_is_an_object(self, llama: Served) -> None:
        c = llama.client().completions.create(
            model="x",
            prompt="json:",
            max_tokens=48,
            temperature=0,
            extra_body={"response_format": {"type": "json_object"}},
        )
        text = c.choices[0].text
        assert text.lstrip().startswith("{")
        if c.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)

    def test_gbnf_grammar_via_extra_body(self, llama: Served) -> None:
        c = llama.client().completions.create(
            model="x",
            prompt="answer:",
            max_tokens=8,
            temperature=1.0,
            seed=3,
            extra_body={"grammar": 'root ::= ("yes" | "no") "!"'},
        )
        assert c.choices[0].text in ("yes!", "no!")
        assert c.choices[0].finish_reason == "stop"

    def test_bad_schema_is_a_bad_request(self, llama: Served) -> None:
        with pytest.raises(openai.BadRequestError) as e:
            llama.client().chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=4,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "t", "schema": {"type": "frobnicate"}},
                },
            )
        assert "frobnicate" in str(e.value)
