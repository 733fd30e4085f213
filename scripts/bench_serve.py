"""Benchmark: `minigpt serve` under load: one streaming client, then 8 concurrent ones, in one run.

Starts the real CLI (`minigpt serve --checkpoint RUN --port 0`) in a subprocess, then drives it over loopback
with plain http.client streaming clients (light, so the 2 cores go to the server): a warm-up, then one client
sending --requests requests one after another, then --clients clients each sending --requests requests, every
loop ending by itself. Each request is a streamed chat completion (temperature 0.8, seed = its number,
max_tokens --max-tokens, `stream_options.include_usage`), so a reply may stop early at <|end|>; tokens are
counted from the server's `usage`. A request is lost unless its stream ends with a finish_reason, the usage
chunk and [DONE].

Reported per phase: requests served and lost, wall time, completion tokens, throughput (all tokens over the
phase's wall time), latency (request sent -> last byte) and time to first token at p50 and p95. The server
generates one request at a time (worker.py), so 8 clients should get about the single stream's throughput,
with the latency of waiting their turn.

    python scripts/bench_serve.py --checkpoint checkpoints/speedrun/sft
    python scripts/bench_serve.py --checkpoint RUN --clients 8 --requests 20 --max-tokens 64
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

QUESTIONS = ["What is `os.path.join` for?", "Describe the function `json.dumps` briefly.",
             "Explain `itertools.chain` in one sentence.", "What is `str.split` for?"]


def start_server(checkpoint: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """`minigpt serve` on a free port; returns the process and its base URL (its log is read and dropped in
    the background after the banner, so the pipe never fills)."""
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "serve", "--checkpoint", checkpoint, "--port", "0",
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    def drain() -> None:
        for _ in proc.stdout:
            pass

    banner = ""
    for line in proc.stdout:
        banner += line
        found = re.search(r"API (http://[\d.]+:\d+)/v1", line)
        if found:
            threading.Thread(target=drain, daemon=True).start()
            return proc, found.group(1)
    raise SystemExit(f"minigpt serve did not start:\n{banner}")


@dataclass
class Result:
    ok: bool
    latency: float  # request sent -> stream ended
    ttft: float  # request sent -> first token
    tokens: int


def one_request(host: str, port: int, seed: int, max_tokens: int) -> Result:
    body = {"messages": [{"role": "user", "content": QUESTIONS[seed % len(QUESTIONS)]}], "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0.8, "seed": seed, "max_tokens": max_tokens}
    t0 = time.perf_counter()
    first, tokens, finished, done = None, 0, False, False
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        for raw in response:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                done = True
                break
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                if first is None and choice["delta"].get("content"):
                    first = time.perf_counter()
                finished |= choice.get("finish_reason") is not None
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    except (OSError, http.client.HTTPException, ValueError):
        pass
    finally:
        conn.close()
    end = time.perf_counter()
    return Result(done and finished and tokens > 0, end - t0, (first or end) - t0, tokens)


def phase(url: str, clients: int, requests: int, max_tokens: int, first_seed: int) -> tuple[list[Result], float]:
    """`clients` loops of `requests` requests each, all at once; (results, wall seconds)."""
    host, port = url.removeprefix("http://").split(":")

    def loop(c: int) -> list[Result]:
        return [one_request(host, int(port), first_seed + c * requests + i, max_tokens) for i in range(requests)]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(loop, range(clients)) for r in rs]
    return results, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="run folder or step folder to serve")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20, help="requests per client (default: 20)")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    console = Console(width=140)
    proc, url = start_server(args.checkpoint)
    try:
        phase(url, 1, 2, args.max_tokens, first_seed=10_000)  # warm-up
        table = Table(title=f"minigpt serve · {Path(args.checkpoint).name} · max_tokens {args.max_tokens} · "
                            f"{os.cpu_count()} CPU cores (server and clients together)")
        for col in ("clients x requests", "served", "lost", "wall s", "tokens", "tokens/s", "latency p50 / p95 s",
                    "first token p50 / p95 s"):
            table.add_column(col, justify="right")
        rates = []
        for clients in (1, args.clients):
            results, wall = phase(url, clients, args.requests, args.max_tokens, first_seed=0)
            ok = [r for r in results if r.ok]
            tokens = sum(r.tokens for r in ok)
            rates.append(tokens / wall)
            lat, ttft = [r.latency for r in ok], [r.ttft for r in ok]
            table.add_row(f"{clients} x {args.requests}", str(len(ok)), str(len(results) - len(ok)), f"{wall:.1f}",
                          str(tokens), f"{tokens / wall:.0f}", f"{pct(lat, 50):.2f} / {pct(lat, 95):.2f}",
                          f"{pct(ttft, 50):.3f} / {pct(ttft, 95):.3f}")
        console.print(table)
        console.print(f"{args.clients} clients get {rates[1] / rates[0]:.2f}x the single stream's throughput "
                      "(requests are generated one at a time)")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
