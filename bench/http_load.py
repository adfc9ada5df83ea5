"""A light HTTP/1.1 load generator for the token-endpoint benchmark.

httpx spends more CPU per request than the server it measures. This sends
raw, prebuilt requests over keep-alive connections, ``depth`` pipelined at a
time, from several processes, and counts 200 answers by parsing only the
status line and Content-Length.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from urllib.parse import urlencode


@dataclass(frozen=True)
class Load:
    host: str
    port: int
    request: bytes
    seconds: float
    connections: int  # per process
    depth: int  # requests in flight per connection


def get_request(host: str, path: str, params: dict[str, str], headers: dict[str, str]) -> bytes:
    lines = [f"GET {path}?{urlencode(params)} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_form(host: str, path: str, form: dict[str, str]) -> bytes:
    body = urlencode(form).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _connection(load: Load, deadline: float) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection(load.host, load.port)
    ok = bad = 0
    buf = b""
    batch = load.request * load.depth
    try:
        while time.perf_counter() < deadline:
            writer.write(batch)
            answered = 0
            while answered < load.depth:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    chunk = await reader.read(1 << 16)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
                    continue
                total = end + 4 + _content_length(buf[:end])
                while len(buf) < total:
                    chunk = await reader.read(1 << 16)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
                if buf[9:12] == b"200":
                    ok += 1
                else:
                    bad += 1
                buf = buf[total:]
                answered += 1
    finally:
        writer.close()
    return ok, bad


async def _process_main(load: Load) -> tuple[int, int]:
    deadline = time.perf_counter() + load.seconds
    results = await asyncio.gather(*(_connection(load, deadline) for _ in range(load.connections)))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _run(load: Load) -> tuple[int, int, float]:
    start = time.perf_counter()
    ok, bad = asyncio.run(_process_main(load))
    return ok, bad, time.perf_counter() - start


def measure(load: Load, processes: int) -> tuple[float, int]:
    """(successful requests per second over all processes, failed requests)."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        results = pool.map(_run, [load] * processes)
    ok = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    return ok / elapsed, bad
