"""`zt serve` prefix cache: time to first token (TTFT) of a multi-turn chat
with a ~1,000-token history, cache on vs off, and after a server restart.

Starts real `zt serve` processes (the `ci` build: `cargo build --profile
ci`) on SmolLM2-135M-Instruct Q4_1, sends a chat whose history is about
1,000 tokens, then turns 2..5 (each appending the previous reply and a
new user message), streaming, greedy, and times the first content chunk.

- **off**: `--cache-ram 0`, no cache directory: every turn prefills all.
- **on**: memory and disk tiers (`--cache-dir` in a temporary directory).
- **restart**: a new process on the same cache directory, the memory tier
  empty: the same conversation again, served from the `.zt` files.

Not run in CI (needs the real model; minutes on a loaded machine):

    cargo build --profile ci
    python benches/bench_serve.py [--model PATH] [--threads 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("ZT_MODELS", Path.home() / ".cache" / "ztensor-models"))

FILLER = (
    "The fox and the dog lived near a river. Every morning the fox ran along "
    "the bank, counted the stones and told the dog what it had seen: boats, "
    "herons, a broken wheel, the miller's cart. The dog listened and asked "
    "questions about the weather, the colour of the water and the names of "
    "the boats. "
)


class Served:
    """A `zt serve` process and its base URL."""

    def __init__(self, binary: Path, model: Path, args: list[str]) -> None:
        """Starts the server and waits until the model is loaded.

        Args:
            binary: The `zt` binary.
            model: The model file.
            args: Extra `zt serve` arguments.
        """
        self.proc = subprocess.Popen(
            [str(binary), "serve", str(model), "--bind", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"zt serve did not start: {line!r}")
        self.base = line.removeprefix("listening on ")
        self.addr = self.base.removeprefix("http://")
        t0 = time.monotonic()
        while self._status("/health") != 200:
            if time.monotonic() - t0 > 120:
                raise RuntimeError("model never loaded")
            time.sleep(0.05)

    def _status(self, path: str) -> int:
        conn = http.client.HTTPConnection(self.addr, timeout=60)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    def turn(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, str, int]:
        """One streamed greedy chat turn.

        Args:
            messages: The conversation so far.
            max_tokens: Tokens to generate.

        Returns:
            (seconds to the first content chunk, the reply, prompt tokens).
        """
        body = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        t0 = time.perf_counter()
        ttft = None
        reply = []
        prompt_tokens = 0
        conn = http.client.HTTPConnection(self.addr, timeout=600)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        r = conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {r.read()[:300]!r}")
        with r:
            for raw in r:
                line = raw.decode().rstrip("\n")
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if ev.get("usage"):
                    prompt_tokens = ev["usage"]["prompt_tokens"]
                for c in ev.get("choices", []):
                    text = c.get("delta", {}).get("content")
                    if text:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        reply.append(text)
        return (
            (ttft if ttft is not None else time.perf_counter() - t0),
            "".join(reply),
            prompt_tokens,
        )

    def close(self) -> None:
        """Stops the server (SIGTERM: pending cache writes finish)."""
        self.proc.terminate()
        self.proc.wait(timeout=60)


def history(target_words: int) -> list[dict[str, str]]:
    """A conversation of about `target_words` words (~1.3 tokens each).

    Args:
        target_words: Words of history to make.

    Returns:
        System, user and assistant messages.
    """
    msgs = [{"role": "system", "content": "You are a patient storyteller."}]
    words = 0
    i = 0
    while words < target_words:
        user = f"Part {i}: continue the story. " + FILLER
        bot = FILLER[::-1].swapcase()[:200] + " " + FILLER
        msgs += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": bot},
        ]
        words += len(user.split()) + len(bot.split())
        i += 1
    return msgs


def conversation(s: Served, turns: int, max_tokens: int) -> list[tuple[float, int, str]]:
    """Turns 1..`turns` of the chat on `s`.

    Args:
        s: The server.
        turns: How many turns.
        max_tokens: Tokens per reply.

    Returns:
        (TTFT seconds, prompt tokens, reply) per turn.
    """
    msgs = history(560)
    out = []
    for t in range(turns):
        msgs.append({"role": "user", "content": f"Question {t}: what did the fox see today?"})
        ttft, reply, n = s.turn(msgs, max_tokens)
        out.append((ttft, n, reply))
        msgs.append({"role": "assistant", "content": reply})
    return out


def main() -> None:
    """Runs the three configurations and prints a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--binary", type=Path, default=REPO / "target" / "ci" / "zt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    common = ["--threads", str(a.threads), "--ctx", "2048"]
    with tempfile.TemporaryDirectory() as cache_dir:
        runs = {}
        off = Served(a.binary, a.model, [*common, "--cache-ram", "0"])
        runs["off"] = conversation(off, a.turns, a.max_tokens)
        off.close()
        on_args = [*common, "--cache-dir", cache_dir, "--cache-bytes", str(2 << 30)]
        on = Served(a.binary, a.model, on_args)
        runs["on"] = conversation(on, a.turns, a.max_tokens)
        on.close()
        again = Served(a.binary, a.model, [*on_args, "--cache-ram", "0"])
        runs["restart"] = conversation(again, a.turns, a.max_tokens)
        again.close()
    same = all([r[2] for r in runs["off"]] == [r[2] for r in runs[k]] for k in ("on", "restart"))
    print(f"model {a.model.name}, threads {a.threads}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"{'turn':>4} {'prompt tok':>10} {'off ms':>9} {'on ms':>9} {'restart ms':>11} {'on x':>6}"
    )
    for t in range(a.turns):
        o, c, r = runs["off"][t][0], runs["on"][t][0], runs["restart"][t][0]
        print(
            f"{t + 1:>4} {runs['off'][t][1]:>10} {o * 1e3:>9.1f} {c * 1e3:>9.1f} "
            f"{r * 1e3:>11.1f} {o / c:>6.1f}"
        )
    if a.turns > 1:
        med = {k: statistics.median(x[0] for x in v[1:]) for k, v in runs.items()}
        print(
            f"median TTFT turns 2..{a.turns}: off {med['off'] * 1e3:.1f} ms, "
            f"on {med['on'] * 1e3:.1f} ms ({med['off'] / med['on']:.1f}x), "
            f"after restart {med['restart'] * 1e3:.1f} ms ({med['off'] / med['restart']:.1f}x)"
        )
    print("replies identical with cache on/off/restart:", same)


if __name__ == "__main__":
    main()
