"""Call statistics: the facts of one call from its captured INVITE
transaction, and calls, ASR, NER, post-dial delay, codes and MOS per node
and per balancer (pure, table-driven); then the console's page, API,
charts and Prometheus gauges over a real SQLite capture database."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from asterfleet.capture.callstats import (
    CallFacts,
    Hop,
    RangeTally,
    Stats,
    by_member,
    call_facts,
    merged,
    percentile,
    summarise,
    tally,
    tally_range,
)
from asterfleet.capture.store import Store
from asterfleet.console.charts import Series, line_chart
from asterfleet.console.stats import CallStatsMetrics, window_stats
from asterfleet.console.stats_ranges import GRAIN_S, SETTLE_S, RangeTallies, window_buckets
from tests.unit.test_console_call_fleet import seed
from tests.unit.test_console_calls import call, make_client
from tests.unit.test_console_web import login

C, LB, N1, N2 = "192.0.2.9:5060", "10.0.0.2:5060", "10.0.1.1:5060", "10.0.1.2:5060"


def hop(ms: float, src: str, dst: str, what: str | int) -> Hop:
    method = what if isinstance(what, str) else None
    status = what if isinstance(what, int) else None
    return Hop("c", int(ms * 1000), method, status, src, dst, "42")


ANSWERED = [
    hop(0, C, LB, "INVITE"), hop(1, LB, N1, "INVITE"), hop(2, LB, C, 100),
    hop(300, N1, LB, 180), hop(301, LB, C, 180), hop(2000, N1, LB, 200), hop(2001, LB, C, 200),
]  # fmt: skip
FAILOVER = [
    hop(0, C, LB, "INVITE"), hop(1, LB, N1, "INVITE"), hop(40, N1, LB, 503),
    hop(41, LB, N2, "INVITE"), hop(500, N2, LB, 200), hop(501, LB, C, 200),
]  # fmt: skip
BUSY = [hop(0, C, LB, "INVITE"), hop(1, LB, N2, "INVITE"), hop(90, N2, LB, 486),
        hop(91, LB, C, 486)]  # fmt: skip
RINGING = [hop(0, C, LB, "INVITE"), hop(1, LB, N1, "INVITE"), hop(80, N1, LB, 180),
           hop(81, LB, C, 180)]  # fmt: skip
NO_NODE = [hop(0, C, LB, "INVITE"), hop(3000, LB, C, 503)]  # no node answered at all


@pytest.mark.parametrize(
    ("hops", "final", "node", "pdd_ms", "why"),
    [
        (ANSWERED, 200, N1, 301.0, "PDD: INVITE to the ringing the caller got (100 is not it)"),
        (FAILOVER, 200, N2, 501.0, "the node that answered, not the one that failed first"),
        (BUSY, 486, N2, 91.0, "a final answer without ringing ends the post-dial delay"),
        (RINGING, None, N1, 81.0, "still ringing: no final answer yet; the node is known"),
        (NO_NODE, 503, LB, 3000.0, "no node answered: the balancer's own answer"),
        (list(reversed(ANSWERED)), 200, N1, 301.0, "storage order does not matter"),
    ],
)
def test_the_facts_of_a_call(
    hops: list[Hop], final: int | None, node: str, pdd_ms: float, why: str
) -> None:
    facts = call_facts(hops)
    assert facts is not None
    assert (facts.final, facts.node, facts.pdd_ms) == (final, node, pdd_ms), why
    assert (facts.balancer_address, facts.capture_host, facts.start_us) == (LB, "42", 0)


def test_a_call_without_an_invite_has_no_facts() -> None:
    assert call_facts([hop(0, C, LB, 200)]) is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7.0], 0.95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),  # nearest rank: the 2nd of 4
        ([4.0, 3.0, 2.0, 1.0], 0.95, 4.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 101)], 0.5, 50.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def facts(final: int | None, pdd: float | None = 100.0, mos: float | None = None,
          node: str = "ast1", start_s: int = 0) -> CallFacts:  # fmt: skip
    return CallFacts("c", start_s * 1_000_000, final, node, LB, "42", pdd, mos,
                     node_name=node, balancer_name="lb1")  # fmt: skip


@pytest.mark.parametrize(
    ("calls", "expected", "why"),
    [
        ([], Stats(), "nothing: no ratios"),
        (
            [facts(200), facts(200), facts(486), facts(503)],
            (4, 4, 0.5, 0.75, {200: 2, 486: 1, 503: 1}),
            "busy is the user's answer (NER), 503 the network's",
        ),
        (
            [facts(200), facts(None), facts(None)],
            (3, 1, 1.0, 1.0, {200: 1}),
            "calls still ringing count as calls, not in the ratios",
        ),
        (
            [facts(487), facts(603), facts(480), facts(408), facts(500)],
            (5, 5, 0.0, 0.6, {408: 1, 480: 1, 487: 1, 500: 1, 603: 1}),
            "cancelled, declined, no answer: the user; timeout and 500: the network",
        ),
    ],
)
def test_asr_ner_and_codes(calls: list[CallFacts], expected: object, why: str) -> None:
    s = summarise(calls)
    if isinstance(expected, Stats):
        assert s == expected and s.asr is None and s.ner is None, why
        return
    assert (s.calls, s.finished, s.asr, s.ner, s.codes) == expected, why


def test_post_dial_delay_and_mean_mos() -> None:
    moses = [4.4, 3.0, None, 4.4, 3.0, None, 4.4, 3.0, None, None]
    calls = [facts(200, float(p), m) for p, m in zip(range(100, 1100, 100), moses, strict=True)]
    s = summarise(calls)
    assert (s.pdd_p50_ms, s.pdd_p95_ms) == (500.0, 1000.0)
    assert s.mos_mean == pytest.approx(3.7)  # calls without RTCP are left out


def test_statistics_per_node_and_balancer_in_buckets() -> None:
    calls = [
        facts(200, node="ast1", start_s=10), facts(486, node="ast1", start_s=70),
        facts(200, node="ast2", start_s=75), facts(None, node="ast2", start_s=130),
    ]  # fmt: skip
    whole = by_member(calls)
    assert {m: b[0].calls for m, b in whole.items()} == {
        ("balancer", "lb1"): 4, ("node", "ast1"): 2, ("node", "ast2"): 2,
    }  # fmt: skip
    buckets = by_member(calls, 60_000_000, 0)
    assert {b: s.calls for b, s in buckets[("balancer", "lb1")].items()} == {
        0: 1, 60_000_000: 2, 120_000_000: 1,
    }  # fmt: skip
    assert buckets[("node", "ast1")][60_000_000].asr == 0.0


def test_a_chart_draws_one_line_per_series_with_its_values() -> None:
    svg = line_chart(
        "ASR per node",
        [Series("ast1", ((0, 50.0), (60, 100.0))), Series("ast<2>", ())],
        0, 120, "%", 100.0,
    )  # fmt: skip
    assert svg.count('<path class="series"') == 1 and 'data-series="ast1"' in svg
    assert "<title>ast1: 50%</title>" in svg and "ast&lt;2&gt;" in svg  # escaped
    assert ">100%</text>" in svg  # the axis top
    empty = line_chart("Calls", [], 0, 120)
    assert "no calls in this window" in empty


MIXED = [
    facts(200, 120.04, 4.4, "ast1", 1), facts(486, 80.0, None, "ast2", 2),
    facts(None, None, None, "ast1", 3), facts(200, 1500.0, 3.1, "ast2", 4),
    facts(503, 33.3, None, "ast1", 5), facts(603, 120.0, 2.0, "ast2", 6),
    facts(200, 90.0, None, "ast1", 7),
]  # fmt: skip


@pytest.mark.parametrize("cut", range(len(MIXED) + 1))
def test_tallies_add_up_to_the_stats_of_all_the_calls(cut: int) -> None:
    """A window's stats from kept tallies of its parts are those of its calls."""
    first, second = tally(MIXED[:cut]), tally(MIXED[cut:])
    before = (first.stats(), second.stats())
    whole = tally([])
    whole.merge(first)
    whole.merge(second)
    assert whole.stats() == summarise(MIXED)
    assert (first.stats(), second.stats()) == before  # the parts are left as they were
    parts = merged([tally_range(MIXED[:cut]), tally_range(MIXED[cut:])])
    direct = by_member(MIXED)
    assert {m: t.stats() for m, t in parts.members.items()} == {m: b[0] for m, b in direct.items()}
    # Post-dial delay is tallied to 0.1 ms: 120.04 ms counts as 120.0 ms.
    assert summarise(MIXED[:1]).pdd_p50_ms == 120.0


S = 1_000_000
STEP = 300 * S  # the 1h window's bucket: four grains


class FakeStore:
    """Calls by start time; every read recorded."""

    def __init__(self, starts_s: list[float]) -> None:
        self.calls = [facts(200 if i % 3 else 486, 100.0 + i, None, f"ast{i % 2}", 0)
                      for i in range(len(starts_s))]  # fmt: skip
        self.calls = [
            CallFacts(f"c{i}", int(t * S), c.final, c.node, c.balancer_address, c.capture_host,
                      c.pdd_ms, node_name=c.node_name, balancer_name=c.balancer_name)
            for i, (t, c) in enumerate(zip(starts_s, self.calls, strict=True))
        ]  # fmt: skip
        self.reads: list[tuple[int, int]] = []

    def read(self, start_us: int, end_us: int) -> list[CallFacts]:
        self.reads.append((start_us, end_us))
        return [c for c in self.calls if start_us <= c.start_us < end_us]

    def window(self, now_us: int) -> list[tuple[int, Stats]]:
        """What the window is, read directly (no tallies kept)."""
        end = (now_us // STEP + 1) * STEP
        return [
            (b, summarise(c for c in self.calls if b <= c.start_us < b + STEP))
            for b in range(end - 12 * STEP, end, STEP)
        ]


def view(ranges: RangeTallies, now_us: int) -> list[tuple[int, Stats]]:
    buckets, *_ = window_buckets(ranges, 3600, now_us)
    return [(b, t.total.stats()) for b, t in buckets]


def test_a_window_reads_only_what_is_not_final() -> None:
    now = 10_000 * STEP + 130 * S  # 130 s into the bucket filling now
    # A call every 20 s over the last hour, one exactly on a bucket's start.
    store = FakeStore([now / S - k * 20 for k in range(180)] + [10_000 * STEP / S])
    ranges = RangeTallies(store.read)
    assert view(ranges, now) == store.window(now)
    # The first view: the ten final buckets one read each; the previous
    # bucket ended 130 s ago (not final): its final grain in one read, its
    # three others one each; the filling bucket's two grains up to now one
    # each; nothing of the future.
    settled = now - SETTLE_S * S
    assert all(s < now for s, e in store.reads)
    assert len(store.reads) == 10 + 1 + 3 + 2
    # The same view again reads only the grains that are not final (and
    # none of the future).
    store.reads.clear()
    assert view(ranges, now) == store.window(now)
    assert store.reads and all(e > settled and s < now for s, e in store.reads)
    assert all(e - s <= GRAIN_S * S for s, e in store.reads)
    # A call captured late in a range not final yet is counted.
    store.calls.append(CallFacts("late", now - 10 * S, 200, "ast1", LB, "42", 50.0))
    assert view(ranges, now) == store.window(now)
    # Later, once everything is final, nothing with calls is read again.
    later = now + 2 * STEP
    view(ranges, later)
    store.reads.clear()
    assert view(ranges, later) == store.window(later)
    assert all(e > later - SETTLE_S * S for s, e in store.reads)


def test_a_range_with_more_calls_than_one_read_returns_is_read_in_pieces() -> None:
    store = FakeStore([t / 10 for t in range(0, 6_000)])  # 10 calls a second for 10 min
    capped = store.read

    def read(start_us: int, end_us: int) -> list[CallFacts]:
        return capped(start_us, end_us)[-100:]  # like read_facts: the newest, at most 100

    ranges = RangeTallies(read, cap=100)
    now = 2 * 3600 * S
    assert ranges.get(0, 600 * S, now).total.calls == 6_000  # a final range
    assert ranges.get(0, 600 * S, 450 * S).total.calls == 4_500  # not final: by grains


def test_kept_ranges_are_bounded_and_the_future_is_not_read() -> None:
    store = FakeStore([float(t) for t in range(0, 36_000, 7)])
    ranges = RangeTallies(store.read, max_ranges=5)
    for b in range(0, 30_000 * S, STEP):
        ranges.get(b, b + STEP, 40_000 * S)
    assert len(ranges) == 5
    assert ranges.get(50_000 * S, 50_300 * S, 40_000 * S) == RangeTally()
    assert store.reads[-1][0] < 40_000 * S


# -- the console -----------------------------------------------------------


@pytest.fixture
def recent_db(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The Calls tests' five calls, moved to the last minutes (and an RTCP-less DB)."""
    import time

    path = str(tmp_path / "capture.db")
    base = (int(time.time()) - 120) * 1_000_000
    store = Store(path)
    try:
        for i, (cid, backend, final) in enumerate([
            ("s0", "10.0.0.3", "200 OK"), ("s1", "10.0.0.4", "486 Busy Here"),
            ("s2", "10.0.0.3", "200 OK"), ("s3", "10.0.0.4", "503 Service Unavailable"),
        ]):  # fmt: skip
            store.insert_rows(
                call(cid, base + i * 1_000_000, backend=backend, final=final, node="")
            )
        yield path, base
    finally:
        store.close()


def test_the_statistics_page_api_and_gauges(tmp_path: Path, recent_db: tuple[str, int]) -> None:
    path, base = recent_db
    with make_client(tmp_path, path) as c:
        db = c.app.state.test_db  # type: ignore[attr-defined]
        seed(db, at=base / 1_000_000)
        login(c)
        body = c.get("/api/v1/stats", params={"window": "15m"}).json()
        members = {(m["kind"], m["name"]): m["total"] for m in body["members"]}
        assert set(members) == {("node", "ast3"), ("node", "ast9"), ("balancer", "lb7")}
        assert members[("balancer", "lb7")]["asr"] == 0.5
        assert members[("balancer", "lb7")]["ner"] == 0.75
        assert members[("node", "ast9")]["codes"] == {"486": 1, "503": 1}
        assert members[("node", "ast3")]["pdd_p50_ms"] == 60.0  # INVITE to the 200, 3 hops
        assert body["total"]["calls"] == 4 and len(body["members"][0]["buckets"]) >= 1
        assert c.get("/api/v1/stats", params={"window": "2y"}).status_code == 400
        # Asked again, only the buckets of the last minutes (not final) are read.
        ranges = c.app.state.console.stats_ranges
        before = ranges.reads
        assert c.get("/api/v1/stats", params={"window": "15m"}).json()["total"] == body["total"]
        assert 0 < ranges.reads - before <= 6 and len(ranges) >= 12 - 6

        page = c.get("/stats", params={"window": "15m"}).text
        row = re.search(r'<tr data-member="node:ast9">(.*?)</tr>', page, re.S)
        assert row and '"num asr">0.0 %<' in row.group(1) and '"num ner">50.0 %<' in row.group(1)
        assert "486×1, 503×1" in row.group(1)
        assert 'id="chart-node-asr"' in page and 'data-series="ast3"' in page
        assert html.unescape(page).count("<svg") == 10

        registry = CollectorRegistry()
        gauges = CallStatsMetrics(registry)
        store = Store(path, create=False)
        try:
            gauges.update(window_stats(store, db, "test", base / 1_000_000 + 60))
        finally:
            store.close()
        text = generate_latest(registry).decode()
        assert 'asterfleet_calls_asr_ratio{kind="balancer",name="lb7"} 0.5' in text
        assert 'asterfleet_calls_responses{code="486",kind="node",name="ast9"} 1.0' in text
        assert 'asterfleet_calls_started{kind="node",name="ast3"} 2.0' in text
        assert "asterfleet_calls_window_seconds 300.0" in text


def test_the_background_refresh_keeps_the_default_window_read(
    tmp_path: Path, recent_db: tuple[str, int]
) -> None:
    import asyncio
    import contextlib

    from asterfleet.console.stats import DEFAULT_WINDOW, refresh_metrics

    path, _base = recent_db
    with make_client(tmp_path, path) as c:
        st = c.app.state.console

        async def one_refresh() -> None:
            task = asyncio.create_task(refresh_metrics(st, CallStatsMetrics(CollectorRegistry())))
            for _ in range(500):
                if st.stats_ranges is not None and st.stats_ranges.reads:
                    break
                await asyncio.sleep(0.02)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(one_refresh())
        ranges = st.stats_ranges
        assert ranges is not None and len(ranges) >= 10  # the final buckets, kept
        before = ranges.reads
        login(c)
        body = c.get("/api/v1/stats", params={"window": DEFAULT_WINDOW}).json()
        assert body["total"]["calls"] == 4
        assert ranges.reads - before <= 6  # only the last minutes read again
