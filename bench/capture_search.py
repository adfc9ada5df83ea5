"""Search at scale: how long the one paging search (console, API and CLI)
takes for the Calls list's queries on a large capture store.

    .venv/bin/python bench/capture_search.py --calls 200000
    .venv/bin/python bench/capture_search.py --postgres --messages 10000000
    .venv/bin/python bench/capture_search.py --pg-dir /var/tmp/search10m --messages 10000000
    .venv/bin/python bench/capture_search.py --db postgresql://… --keep --calls 1000000

Fills a fresh store (SQLite in a temporary directory, a throwaway
PostgreSQL cluster with ``--postgres``, one kept in ``--pg-dir`` for the
next runs, or the database ``--db``) with
calls shaped like the lab's (caller → balancer → node and back, 7 messages,
plus one OPTIONS probe per call) spread over the last ``--days`` days (so
PostgreSQL has a partition per day), then runs each query ``--repeat``
times in-process through the one paging search (``page_calls``, what the
console, the API and the CLI call) and prints p50/p99 in milliseconds. With
``--cli`` it also times the whole ``asterfleet capture search --call-id``
command (process start-up included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import MessageQuery, search_messages
from asterfleet.capture.store import DAY_US, Row, Store

#: The first call; set by main() to ``--days`` before now.
T0 = 1_700_000_000_000_000
#: µs between two calls; set by main() so the calls span ``--days``.
STEP_US = 10_000
CALLER, LB = "10.0.0.1", "10.0.0.2"


def call_rows(i: int) -> Iterator[Row]:
    """One call's rows in the store's column order (see store.COLUMNS)."""
    call_id = f"bench-{i:09d}@x"
    start = T0 + i * STEP_US
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


#: CPU seconds used so far by this process, its children and the database
#: server (None: not measurable, e.g. SQLite has no server).
cpu_probe: Callable[[], float] | None = None


def measure(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """Wall p50/p99, and the CPU the same runs took (client, CLI process and
    PostgreSQL together): on a shared machine the wall time includes waiting
    for other people's work, the CPU time does not."""
    times: list[float] = []
    cpus: list[float] = []
    for _ in range(repeat):
        others0 = cpu_probe() if cpu_probe else 0.0
        own0 = time.process_time()
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
        own = time.process_time() - own0
        if cpu_probe:
            cpus.append((cpu_probe() - others0 + own) * 1000)
    out = {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99)}
    if cpus:
        out |= {"cpu_p50_ms": pct(cpus, 0.5), "cpu_p99_ms": pct(cpus, 0.99)}
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if q == 0.5:
        return round(statistics.median(ordered), 2)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)


_TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(pid: int, children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:  # reaped children (the CLI's backends, once they exit)
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def postgres_cpu_probe(store: Store) -> Callable[[], float]:
    """CPU of this process's reaped children (the CLI) and of every process
    of the server (this process's own is measured around each run)."""
    import resource

    with store.engine.connect() as conn:
        data = conn.exec_driver_sql("SHOW data_directory").scalar_one()
    root = int((Path(data) / "postmaster.pid").read_text().split()[0])

    def probe() -> float:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = kids.ru_utime + kids.ru_stime
        total += _stat_cpu(root, children=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == root:
                    # schedstat: nanoseconds on a CPU (stat's ticks are 10 ms).
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        total += int((entry / "schedstat").read_text().split()[0]) / 1e9
        return total

    return probe


def cli_call_id(url: str, call_id: str, repeat: int) -> dict[str, float]:
    """The whole ``asterfleet capture search --call-id`` command, start-up included."""
    exe = Path(sys.executable).with_name("asterfleet")
    argv = [str(exe), "capture", "search", "--db", url, "--call-id", call_id, "--json"]
    # As installed: the modules' bytecode is cached (the first run writes
    # it), even where the shell says PYTHONDONTWRITEBYTECODE, as a
    # development shell may; compiling them again takes about 40 ms a run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def once() -> None:
        out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
        assert call_id in out.stdout, out.stdout[:200]

    once()  # warm the page cache and write the bytecode
    return measure(once, repeat)


def main() -> None:
    global T0, STEP_US, cpu_probe
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL")
    parser.add_argument(
        "--pg-dir",
        type=Path,
        help="a PostgreSQL cluster kept in this directory: filled on the first run, "
        "measured again (as with --keep) on the next ones",
    )
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--messages", type=int, help="fill to about this many messages instead")
    parser.add_argument("--days", type=float, default=7.0, help="the calls span this many days")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--cli", action="store_true", help="also time the CLI command")
    parser.add_argument("--keep", action="store_true", help="the store is filled already")
    parser.add_argument(
        "--slow-repeat",
        type=int,
        default=5,
        help="repeats of the call filters outside the targets (answer class, text)",
    )
    args = parser.parse_args()
    calls = args.calls if args.messages is None else max(1, int(args.messages / 7.6))
    now_us = int(time.time() * 1_000_000)
    span_us = int(args.days * DAY_US)
    T0 = (now_us - span_us) // 1_000_000 * 1_000_000
    STEP_US = max(1, span_us // calls)
    pg = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or str(Path(tmp) / "bench.db")
        if args.postgres or args.pg_dir:
            from asterfleet.testing.postgres import PgSandbox

            pg = PgSandbox(keep_in=args.pg_dir)
            url = pg.start()
            args.keep = args.keep or pg.reused
        store = Store(url)
        try:
            if args.keep:
                load_s = 0.0
                with store.engine.connect() as conn:
                    T0 = int(
                        conn.exec_driver_sql("SELECT min(ts_us) FROM sip_messages").scalar_one()
                    )
                    newest = conn.exec_driver_sql(
                        "SELECT max(ts_us) FROM sip_messages"
                    ).scalar_one()
                calls = max(1, int(store.count() / 7.6))
                STEP_US = max(1, (int(newest) - T0) // calls)
            else:
                load_s = fill(store, calls)
                if store.dialect == "postgresql":
                    with store.engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    ) as conn:
                        conn.exec_driver_sql("VACUUM ANALYZE sip_messages")
            messages = store.count()
            if store.dialect == "postgresql":
                cpu_probe = postgres_cpu_probe(store)
            mid = T0 + (calls // 2) * STEP_US
            minute, h = 60_000_000, 3_600_000_000
            call_id = f"bench-{calls // 2:09d}@x"
            queries: dict[str, MessageQuery] = {
                "first page": MessageQuery(),
                "call-id": MessageQuery(call_id=call_id),
                "from-user prefix (1 user)": MessageQuery(from_user="user0042"),
                "from-user prefix (10 users)": MessageQuery(from_user="user004"),
                "from-user prefix (every user)": MessageQuery(from_user="user"),
                "time range (1 min)": MessageQuery(since_us=mid, until_us=mid + minute),
                "time range (1 h)": MessageQuery(since_us=mid, until_us=mid + h),
                "1 user + 1 h": MessageQuery(from_user="user0042", since_us=mid, until_us=mid + h),
                "10 users + 1 h": MessageQuery(from_user="user004", since_us=mid, until_us=mid + h),
                "from + to prefix": MessageQuery(from_user="user00", to_user="1"),
                "answer class 4xx": MessageQuery(status_class="4xx"),
                "text in a header": MessageQuery(text="X-Tenant: t42\r"),
            }
            slow = ("answer class 4xx", "text in a header")
            results = {
                name: measure(
                    lambda q=q: page_calls(store, q, 50),  # type: ignore[misc]
                    args.slow_repeat if name in slow else args.repeat,
                )
                for name, q in queries.items()
            }
            # The message search (`capture search --messages`): time slices
            # newest first on PostgreSQL (capture time has a BRIN index only).
            for name, q in {
                "messages: newest 50": MessageQuery(limit=50),
                "messages: 50 of 1 user": MessageQuery(from_user="user0042", limit=50),
            }.items():
                results[name] = measure(
                    lambda q=q: search_messages(store, q),  # type: ignore[misc]
                    args.repeat,
                )
            if args.cli:
                results["call-id, whole CLI command"] = cli_call_id(
                    url, call_id, min(args.repeat, 20)
                )
        finally:
            store.close()
            if pg is not None and args.pg_dir:
                pg.stop()
            elif pg is not None:
                pg.destroy()
    print(
        json.dumps(
            {
                "store": store.dialect,
                "partitioned": store.partitioned,
                "calls": calls,
                "messages": messages,
                "load_s": round(load_s, 1),
                "load_average": os.getloadavg(),
                "page_of_50": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
