"""What a poll of the Calls list's live tail costs on PostgreSQL, when it
catches up with a second of capture at the collector's limit.

Stores ``--batches`` batches of ``--batch-size`` messages (one call opening
in seven, as real traffic) from ``--writers`` threads at once (their ids
interleave, as the collector's writer processes' do), then polls the tail
(:func:`asterfleet.capture.tail.tail_calls`, 50 openings a poll) from where
it was before them until it has caught up, for a tail with no filter, one
whose filter matches none of the calls (it reads every opening), and one
with a filter on the whole call (an answer class: a look-up per opening).

    .venv/bin/python bench/capture_tail.py                 # 34 × 5,000: one second at 170,000/s
    .venv/bin/python bench/capture_tail.py --batches 340   # ten seconds behind
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Row, Store
from asterfleet.capture.tail import Position, tail_calls, tail_start
from asterfleet.testing.postgres import PgSandbox

FILTERS = {
    "no filter": MessageQuery(),
    "filter matching none (From prefix)": MessageQuery(from_user="nobody"),
    "filter on the whole call (2xx)": MessageQuery(status_class="2xx"),
}


def message(call_id: str, ts_us: int, opening: bool) -> Row:
    start = "INVITE sip:100@b SIP/2.0" if opening else "SIP/2.0 180 Ringing"
    raw = f"{start}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\r\n".encode()
    return (
        ts_us, "10.0.0.1", 5060, "10.0.0.2", 5060, "udp", 1, "lb1", call_id,
        "INVITE" if opening else None, None if opening else 180, "1 INVITE", "alice", "100",
        "ua", "", raw, opening,
    )  # fmt: skip


def store_batches(url: str, tag: str, batches: int, size: int, writers: int) -> int:
    """Store the batches from ``writers`` threads at once; the openings stored."""
    now = int(time.time() * 1_000_000)

    def write(w: int) -> None:
        store = Store(url, create=False)
        try:
            for b in range(w, batches, writers):
                store.insert_rows(
                    [message(f"{tag}-{b}-{i // 7}", now + i, i % 7 == 0) for i in range(size)]
                )
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return batches * ((size + 6) // 7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=34)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pg = PgSandbox()
    results = []
    try:
        pg.start()
        store = Store(pg.url)
        try:
            for n, (name, q) in enumerate(FILTERS.items()):
                position = tail_start(store)
                openings = store_batches(
                    pg.url, f"f{n}", args.batches, args.batch_size, args.writers
                )
                polls = calls = 0
                started = time.perf_counter()
                while polls < 100_000:
                    step = tail_calls(store, q, position)
                    polls += 1
                    calls += len(step.calls)
                    position = step.position
                    if not step.calls and not Position.decode(position).sent:
                        break
                seconds = time.perf_counter() - started
                results.append(
                    {
                        "tail": name,
                        "openings": openings,
                        "polls": polls,
                        "calls": calls,
                        "ms": round(seconds * 1000, 1),
                        "ms_per_poll": round(seconds * 1000 / polls, 2),
                        "us_per_opening": round(seconds * 1e6 / openings, 2),
                    }
                )
        finally:
            store.close()
    finally:
        pg.destroy()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'tail':<38} {'openings':>9} {'polls':>6} {'calls':>7} {'ms':>8} {'ms/poll':>8} "
          f"{'µs/opening':>10}")  # fmt: skip
    for r in results:
        print(f"{r['tail']:<38} {r['openings']:>9} {r['polls']:>6} {r['calls']:>7} {r['ms']:>8} "
              f"{r['ms_per_poll']:>8} {r['us_per_opening']:>10}")  # fmt: skip


if __name__ == "__main__":
    main()
