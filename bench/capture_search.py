"""Search at scale: how long the one paging search (console, API and CLI)
takes for the Calls list's queries on a large capture store.

    .venv/bin/python bench/capture_search.py --calls 200000
    .venv/bin/python bench/capture_search.py --db postgresql://… --calls 1000000

Fills a fresh store (SQLite in a temporary directory unless --db is given)
with calls shaped like the lab's (caller → balancer → node and back, 7
messages, plus one OPTIONS probe per call), then runs each query
``--repeat`` times in-process and prints p50/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Row, Store

T0 = 1_700_000_000_000_000
CALLER, LB = "10.0.0.1", "10.0.0.2"


def call_rows(i: int) -> Iterator[Row]:
    """One call's rows in the store's column order (see store.COLUMNS)."""
    call_id = f"bench-{i:09d}@x"
    start = T0 + i * 10_000  # a call every 10 ms
    node = f"10.0.1.{i % 50}"
    user = f"user{i % 1000:04d}"
    final = 486 if i % 10 == 0 else 200
    steps = [
        ("INVITE", None, "1 INVITE", CALLER, LB, True),
        ("INVITE", None, "1 INVITE", LB, node, True),
        (None, final, "1 INVITE", node, LB, False),
        (None, final, "1 INVITE", LB, CALLER, False),
        ("ACK", None, "1 ACK", CALLER, LB, False),
    ]
    if final == 200:
        steps += [
            ("BYE", None, "2 BYE", CALLER, LB, False),
            (None, 200, "2 BYE", LB, CALLER, False),
        ]
    for k, (method, status, cseq, src, dst, opens) in enumerate(steps):
        raw = (
            f"{method or 'SIP/2.0'} … Call-ID: {call_id}\r\nCSeq: {cseq}\r\n"
            f"X-Tenant: t{i % 97}\r\n\r\n"
        ).encode()
        yield (
            start + k * 20_000, src, 5060, dst, 5060, "udp", 1, "lb1", call_id, method, status,
            cseq, user, "100", "bench", "", raw, opens,
        )  # fmt: skip
    probe = f"probe-{i:09d}@x"
    yield (
        start + 5_000, LB, 5060, node, 5060, "udp", 1, "lb1", probe, "OPTIONS", None,
        "1 OPTIONS", "", "", "kamailio", "", b"OPTIONS sip:x SIP/2.0\r\n\r\n", True,
    )  # fmt: skip


def fill(store: Store, calls: int) -> float:
    started = time.perf_counter()
    batch: list[Row] = []
    for i in range(calls):
        batch.extend(call_rows(i))
        if len(batch) >= 20_000:
            store.insert_rows(batch)
            batch = []
    store.insert_rows(batch)
    return time.perf_counter() - started


def measure(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.db or str(Path(tmp) / "bench.db"))
        try:
            load_s = fill(store, args.calls)
            messages = store.count()
            mid = T0 + args.calls * 5_000
            queries: dict[str, MessageQuery] = {
                "first page": MessageQuery(),
                "call-id": MessageQuery(call_id=f"bench-{args.calls // 2:09d}@x"),
                "from-user prefix (1 user)": MessageQuery(from_user="user0042"),
                "from-user prefix (every user)": MessageQuery(from_user="user"),
                "time range (1 min)": MessageQuery(since_us=mid, until_us=mid + 60_000_000),
                "prefix + time": MessageQuery(
                    from_user="user00", since_us=mid, until_us=mid + 600_000_000
                ),
                "answer class 4xx": MessageQuery(status_class="4xx"),
                "text in a header": MessageQuery(text="X-Tenant: t42\r"),
            }
            results = {
                name: measure(lambda q=q: page_calls(store, q, 50), args.repeat)  # type: ignore[misc]
                for name, q in queries.items()
            }
        finally:
            store.close()
    print(
        json.dumps(
            {
                "store": store.dialect,
                "calls": args.calls,
                "messages": messages,
                "load_s": round(load_s, 1),
                "page_of_50": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
