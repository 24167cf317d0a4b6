"""`zt serve` benchmarks: prefix-cache TTFT, and aggregate decode throughput
against llama.cpp's `llama-server` at 1, 2, 4, 8 concurrent streams.

**ttft** (default): time to first token (TTFT) of a multi-turn chat
with a ~1,000-token history, cache on vs off, and after a server restart.

Starts real `zt serve` processes (the `ci` build: `cargo build --profile
ci`) on SmolLM2-135M-Instruct Q4_1, sends a chat whose history is about
1,000 tokens, then turns 2..5 (each appending the previous reply and a
new user message), streaming, greedy, and times the first content chunk.

- **off**: `--cache-ram 0`, no cache directory: every turn prefills all.
- **on**: memory and disk tiers (`--cache-dir` in a temporary directory).
- **restart**: a new process on the same cache directory, the memory tier
  empty: the same conversation again, served from the `.zt` files.

**throughput**: N streams (N = 1, 2, 4, 8 by default), each sending
greedy completions back to back (distinct short prompts, `--max-tokens`
each), against `zt serve --parallel N` and `llama-server -np N` (its
slots: continuous batching) on the same GGUF with the same settings: 2
threads, per-sequence context `--ctx`, f16 KV cache, no flash attention,
no prompt/prefix cache. Aggregate tok/s = generated tokens of all streams
/ wall time from the first request to the last answer (prefill included,
the same prompts on both sides). Both servers run at once and take turns
(zt, llama, llama, zt, ... `--repeats` each), so a change of the shared
machine's load between them hits both alike; medians are compared. Also
prints zt's mean decode batch size (from `/metrics`).

Not run in CI (needs the real model; minutes on a loaded machine):

    cargo build --profile ci
    python benches/bench_serve.py [--model PATH] [--threads 2]
    python benches/bench_serve.py --mode throughput --model M.gguf \
        --llama-server /path/to/llama-server [--streams 1,2,4,8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
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


PROMPTS = [
    "The history of the river town begins with a mill, a bridge and",
    "Write a short story about a fox who counts the stones along the bank:",
    "Here is a list of the ten most useful kitchen tools and why:",
    "The weather report for the coast this weekend says that",
    "Once upon a time, in a village at the edge of a forest, there lived",
    "To repair a bicycle tyre you need a pump, a patch kit and",
    "The committee met on Tuesday to discuss the new library, and",
    "A good cup of tea depends on the water, the leaves and",
]


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer(Served):
    """A `llama-server` process (llama.cpp) and its base URL."""

    def __init__(self, binary: Path, model: Path, args: list[str]) -> None:
        """Starts llama-server on a free port and waits for `/health`.

        Args:
            binary: The `llama-server` binary.
            model: The GGUF model.
            args: Extra arguments.
        """
        port = free_port()
        self.proc = subprocess.Popen(
            [
                str(binary),
                "-m",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addr = f"127.0.0.1:{port}"
        self.base = f"http://{self.addr}"
        t0 = time.monotonic()
        while True:
            try:
                if self._status("/health") == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}")
            if time.monotonic() - t0 > 120:
                raise RuntimeError("llama-server never loaded")
            time.sleep(0.1)


def complete(addr: str, prompt: str, max_tokens: int) -> tuple[int, str]:
    """One greedy, non-streamed `/v1/completions` request.

    Args:
        addr: host:port of the server.
        prompt: The prompt.
        max_tokens: Tokens to generate.

    Returns:
        (completion tokens, text).
    """
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    conn = http.client.HTTPConnection(addr, timeout=600)
    try:
        conn.request(
            "POST",
            "/v1/completions",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        r = conn.getresponse()
        raw = r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {raw[:300]!r}")
        j = json.loads(raw)
        return int(j["usage"]["completion_tokens"]), j["choices"][0]["text"]
    finally:
        conn.close()


def aggregate(addr: str, streams: int, rounds: int, max_tokens: int) -> tuple[float, int, float]:
    """`streams` clients sending `rounds` completions each, back to back.

    Args:
        addr: host:port of the server.
        streams: Concurrent clients.
        rounds: Requests per client.
        max_tokens: Tokens per request.

    Returns:
        (aggregate generated tok/s, tokens, wall seconds).
    """
    complete(addr, PROMPTS[0], 8)  # warm-up (page the weights in)
    tokens = [0] * streams
    errors: list[BaseException] = []
    start = threading.Barrier(streams + 1)

    def client(i: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                n, _ = complete(addr, PROMPTS[(i + r * streams) % len(PROMPTS)], max_tokens)
                tokens[i] += n
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    return sum(tokens) / wall, sum(tokens), wall


def metric(addr: str, name: str) -> float:
    """A value of zt's `/metrics`.

    Args:
        addr: host:port of the server.
        name: The metric's name.

    Returns:
        Its value (0 when absent).
    """
    conn = http.client.HTTPConnection(addr, timeout=60)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def throughput(a: argparse.Namespace) -> None:
    """Aggregate tok/s of zt serve and llama-server at each stream count.

    Both servers run side by side (an idle one uses no CPU) and take turns,
    in the order zt, llama, llama, zt, ... for `--repeats` rounds each, so
    a change in the machine's load in between hits both alike; the medians
    are compared.

    Args:
        a: The parsed command line.
    """
    if a.llama_server is None:
        raise SystemExit("--mode throughput needs --llama-server PATH")
    counts = [int(x) for x in a.streams.split(",")]
    rows = []
    for n in counts:
        zt = Served(
            a.binary,
            a.model,
            ["--threads", str(a.threads), "--ctx", str(a.ctx), "--parallel", str(n)]
            + ["--queue", str(2 * n), "--cache-ram", "0"],
        )
        try:
            llama = LlamaServer(
                a.llama_server,
                a.model,
                ["-t", str(a.threads), "-tb", str(a.threads), "-np", str(n)]
                + ["-c", str(a.ctx * n), "-ctk", "f16", "-ctv", "f16", "-fa", "off"]
                + ["--no-cache-prompt", "-cram", "0", "-cb"],
            )
        except BaseException:
            zt.close()
            raise
        runs: dict[str, list[tuple[float, int, float]]] = {"zt": [], "llama": []}
        loads = []
        try:
            for r in range(a.repeats):
                order = [("zt", zt), ("llama", llama)]
                for name, srv in order if r % 2 == 0 else order[::-1]:
                    loads.append(os.getloadavg()[0])
                    runs[name].append(aggregate(srv.addr, n, a.rounds, a.max_tokens))
            batches = metric(zt.addr, "zt_decode_batches_total")
            batch_rows = metric(zt.addr, "zt_decode_batch_rows_total")
        finally:
            zt.close()
            llama.close()
        z = statistics.median(x[0] for x in runs["zt"])
        ll = statistics.median(x[0] for x in runs["llama"])
        mean_batch = batch_rows / batches if batches else 1.0
        rows.append((n, z, ll, mean_batch, loads))
        each = ", ".join(
            f"{p[0]:.1f}/{q[0]:.1f}" for p, q in zip(runs["zt"], runs["llama"], strict=True)
        )
        print(
            f"N={n}: zt {z:.1f} tok/s, llama-server {ll:.1f} tok/s (median of {a.repeats}; "
            f"zt/llama each round {each}), load {min(loads):.2f}-{max(loads):.2f}",
            flush=True,
        )
    print(
        f"model {a.model.name}, threads {a.threads}, ctx/seq {a.ctx}, "
        f"{a.rounds} requests x {a.max_tokens} tokens per stream, f16 KV, greedy, "
        "prefill included"
    )
    print(
        f"{'N':>3} {'zt tok/s':>9} {'llama tok/s':>12} {'zt/llama':>9} {'zt batch':>9} "
        f"{'load':>10}"
    )
    for n, z, ll, mb, loads in rows:
        print(
            f"{n:>3} {z:>9.1f} {ll:>12.1f} {z / ll:>9.2f} {mb:>9.2f} "
            f"{min(loads):>4.2f}-{max(loads):.2f}"
        )
    print(f"load average at the end: {os.getloadavg()}")


def main() -> None:
    """Runs the chosen benchmark and prints a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["ttft", "throughput"], default="ttft")
    ap.add_argument("--model", type=Path, default=MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--binary", type=Path, default=REPO / "target" / "ci" / "zt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--llama-server", type=Path, default=None)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="throughput: turns per server (median)")
    ap.add_argument("--ctx", type=int, default=1024)
    a = ap.parse_args()
    if a.mode == "throughput":
        a.max_tokens = a.max_tokens or 64
        throughput(a)
        return
    a.max_tokens = a.max_tokens or 16
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
