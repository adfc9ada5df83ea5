"""Call statistics at scale: how long the console takes to compute one
window of the Statistics page (twelve buckets per node and balancer) that
holds a given number of calls.

    .venv/bin/python bench/capture_stats.py --calls 20000 --window 1h

Fills a fresh SQLite store with the lab-shaped calls of
``bench/capture_search.py`` (50 nodes, 1 in 10 busy), spread evenly over
the window, then times the window ``--repeat`` times, three ways:

- ``cold``: a console that has not seen the window yet (every range read);
- ``live``: the window ending now, viewed again (a refreshed page): the
  ranges of the last few minutes, not final yet, are read again, the rest
  is kept;
- ``past``: the window viewed again once the last call is over 6 minutes
  old (every range with calls final: kept).

``--uncached`` times the old way instead (every call of the window read
and folded on every request), for comparison.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
from pathlib import Path

import capture_search
from capture_search import T0, fill, measure  # the same calls as the search bench

from asterfleet.capture.callstats import CallFacts, by_member, read_facts
from asterfleet.capture.store import Store
from asterfleet.console.stats_ranges import GRAIN_S, SETTLE_S, RangeTallies, window_buckets

WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls in the window")
    parser.add_argument("--window", choices=WINDOWS, default="1h")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--uncached", action="store_true", help="the old way, for comparison")
    args = parser.parse_args()
    seconds = WINDOWS[args.window]
    # The calls fill the window's last eleven buckets and the one filling now.
    step_us = seconds * 1_000_000 // 12
    origin = (T0 // step_us + 1) * step_us  # a bucket boundary
    capture_search.T0 = origin
    capture_search.STEP_US = seconds * 1_000_000 // args.calls
    with tempfile.TemporaryDirectory(prefix="af-stats-") as tmp:
        store = Store(str(Path(tmp) / "capture.db"))
        try:
            fill_s = fill(store, args.calls)
            live_now = origin + (args.calls - 1) * capture_search.STEP_US + 1  # the last call
            # Once the last calls are final: the buckets since then hold none.
            past_now = live_now + (SETTLE_S + 2 * GRAIN_S) * 1_000_000

            def read(start_us: int, end_us: int) -> list[CallFacts]:
                return read_facts(store, start_us, end_us)

            out: dict[str, object] = {
                "calls": args.calls, "window": args.window, "fill_s": round(fill_s, 1),
            }  # fmt: skip
            if args.uncached:

                def old() -> None:
                    by_member(read_facts(store, origin - step_us, live_now + step_us), step_us)

                out["uncached_ms"] = measure(old, args.repeat)
            else:
                calls = 0

                def cold() -> None:
                    nonlocal calls
                    buckets, *_ = window_buckets(RangeTallies(read), seconds, live_now)
                    calls = sum(t.total.calls for _b, t in buckets)

                out["cold_ms"] = measure(cold, args.repeat)
                assert calls == args.calls, (calls, args.calls)
                for name, now in (("past", past_now), ("live", live_now)):
                    ranges = RangeTallies(read)
                    window_buckets(ranges, seconds, now)  # the first view fills it
                    first = ranges.reads
                    out[f"{name}_ms"] = measure(
                        functools.partial(window_buckets, ranges, seconds, now), args.repeat
                    )
                    out[f"{name}_ranges_read_per_view"] = (ranges.reads - first) / args.repeat
            print(json.dumps(out))
        finally:
            store.close()


if __name__ == "__main__":
    main()
