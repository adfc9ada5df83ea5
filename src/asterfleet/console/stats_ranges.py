"""The statistics of time ranges, kept once they are over (pure: the read
and the clock are given).

A window of the Statistics page is twelve buckets; a bucket is a whole
number of :data:`GRAIN_S` grains (every window's bucket is: 15m/12 = 75 s).
A range that ended more than :data:`SETTLE_S` ago is *final*: the calls
that started in it have their answers (a call is counted by its start, and
its INVITE transaction ends by then: a proxy's Timer C is above 3 minutes), so its tally is
read once and kept. A range that is not final is added up from its grains:
the final ones kept, only the last few minutes read again. So a request
reads what changed, not the whole window, and a 7-day window costs what
its last minutes cost once the console has seen it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from asterfleet.capture.callstats import MAX_CALLS, CallFacts, RangeTally

#: Every bucket of every window is a whole number of grains.
GRAIN_S = 75
#: A range that ended this long ago is final (its calls have their answers).
SETTLE_S = 300
#: Ranges kept (least recently used dropped first): the buckets of every
#: window and the grains of the longest window's last bucket (14 h = 672).
MAX_RANGES = 2048

#: The facts of the calls that started in [start µs, end µs), named.
Read = Callable[[int, int], list[CallFacts]]


class RangeTallies:
    """Tallies of time ranges (µs), final ones kept; safe across threads."""

    def __init__(self, read: Read, max_ranges: int = MAX_RANGES, cap: int = MAX_CALLS) -> None:
        self._read = read
        self._max = max_ranges
        self._cap = cap  # a read returning this many calls may have left some out
        self._kept: OrderedDict[tuple[int, int], RangeTally] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # ranges read from the store (for tests and the bench)

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, start_us: int, end_us: int, now_us: int) -> RangeTally:
        """The tally of the calls that started in [start_us, end_us). Do not
        change it: a kept tally is shared."""
        if start_us >= now_us:
            return RangeTally()  # the future has no calls yet
        final = end_us <= now_us - SETTLE_S * 1_000_000
        key = (start_us, end_us)
        if final:
            with self._lock:
                kept = self._kept.get(key)
                if kept is not None:
                    self._kept.move_to_end(key)
                    return kept
        grain = GRAIN_S * 1_000_000
        if not final and end_us - start_us > grain and start_us % grain == 0:
            return self._from_grains(start_us, end_us, now_us)
        tally = RangeTally()
        for chunk in self._chunks(start_us, end_us):
            for f in chunk:
                tally.add(f)
        if final:
            with self._lock:
                self._keep(key, tally)
        return tally

    def _chunks(self, start_us: int, end_us: int) -> Iterator[list[CallFacts]]:
        """The calls of [start_us, end_us), read in as many pieces as it takes
        for no read to reach the cap (a read that does is halved and read again)."""
        todo = [(start_us, end_us)]
        while todo:
            a, b = todo.pop()
            facts = self._read(a, b)
            with self._lock:
                self.reads += 1
            # Within 1 % of the cap: the read may have stopped at it (a call
            # whose first INVITE is before the range takes a place, then is left out).
            if len(facts) >= self._cap - self._cap // 100 and b - a > 1:
                mid = (a + b) // 2
                todo += [(mid, b), (a, mid)]
                continue
            yield facts

    def _keep(self, key: tuple[int, int], tally: RangeTally) -> None:
        self._kept[key] = tally
        while len(self._kept) > self._max:
            self._kept.popitem(last=False)

    def _from_grains(self, start_us: int, end_us: int, now_us: int) -> RangeTally:
        """A range not final yet: its final grains kept (those missing read in
        one go), the others read again."""
        grain = GRAIN_S * 1_000_000
        settled = now_us - SETTLE_S * 1_000_000
        grains = [(g, min(g + grain, end_us)) for g in range(start_us, end_us, grain)]
        with self._lock:
            missing = [k for k in grains if k[1] <= settled and k not in self._kept]
        if missing:
            fresh = {k: RangeTally() for k in missing}
            for chunk in self._chunks(missing[0][0], missing[-1][1]):
                for f in chunk:
                    g = start_us + (f.start_us - start_us) // grain * grain
                    k = (g, min(g + grain, end_us))
                    if k in fresh:
                        fresh[k].add(f)
            with self._lock:
                for k, t in fresh.items():
                    self._keep(k, t)
        out = RangeTally()
        for g, e in grains:
            out.merge(self.get(g, e, now_us))
        return out


#: How many buckets a window is cut into.
BUCKETS = 12


def window_buckets(
    ranges: RangeTallies, seconds: int, now_us: int, buckets: int = BUCKETS
) -> tuple[list[tuple[int, RangeTally]], int, int, int]:
    """The window of ``seconds`` that ends with the bucket now fills, as
    (bucket start, tally) pairs; and its start, end and bucket length (µs)."""
    step = seconds * 1_000_000 // buckets
    end = (now_us // step + 1) * step  # whole buckets, the last one still filling
    start = end - buckets * step
    return [(b, ranges.get(b, b + step, now_us)) for b in range(start, end, step)], start, end, step
