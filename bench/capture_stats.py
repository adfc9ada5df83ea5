"""Call statistics at scale: how long the console takes to compute the
statistics of one window (read the calls' INVITE transactions, fold them
per node and balancer, in twelve buckets) for a given number of calls.

    .venv/bin/python bench/capture_stats.py --calls 20000

Fills a fresh SQLite store with the lab-shaped calls of
``bench/capture_search.py`` (a call every 10 ms over 50 nodes, 1 in 10
busy), then times the window that holds them all ``--repeat`` times.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from capture_search import T0, fill, measure  # the same calls as the search bench

from asterfleet.capture.callstats import by_member, read_facts
from asterfleet.capture.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls in the window")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="af-stats-") as tmp:
        store = Store(str(Path(tmp) / "capture.db"))
        try:
            fill_s = fill(store, args.calls)
            until = T0 + args.calls * 10_000 + 1_000_000
            step = (until - T0) // 12
            facts: list[object] = []

            def window() -> None:
                found = read_facts(store, T0, until)
                by_member(found, step, T0)
                facts[:] = found

            started = time.perf_counter()
            timings = measure(window, args.repeat)
            print(json.dumps({
                "calls": args.calls, "facts": len(facts), "fill_s": round(fill_s, 1),
                "window_ms": timings, "total_s": round(time.perf_counter() - started, 1),
            }))  # fmt: skip
        finally:
            store.close()


if __name__ == "__main__":
    main()
