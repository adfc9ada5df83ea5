"""The Statistics area: calls, ASR, NER, post-dial delay, response codes and
mean MOS per node and per balancer over time (definitions in
asterfleet.capture.callstats), as tables, server-rendered SVG charts, JSON
(``GET /api/v1/stats``) and Prometheus gauges refreshed in the background
over the last :data:`METRICS_WINDOW_S`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response
from markupsafe import Markup
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel, Field

from asterfleet.capture.callstats import (
    BALANCER,
    NODE,
    CallFacts,
    Member,
    RangeTally,
    Stats,
    by_member,
    merged,
    named,
    read_facts,
)
from asterfleet.capture.store import Store
from asterfleet.console.addressbook import directory
from asterfleet.console.charts import Series, line_chart
from asterfleet.console.security import API_ERRORS, Principal, api_reader, page_user
from asterfleet.console.state import ConsoleState, console_state
from asterfleet.console.stats_ranges import BUCKETS, RangeTallies, window_buckets
from asterfleet.console.web import render
from asterfleet.db import Database
from asterfleet.errors import UsageError
from asterfleet.fleet.directory import BALANCER as BALANCER_KIND
from asterfleet.fleet.directory import NODE as NODE_KIND
from asterfleet.fleet.directory import Directory, capture_key

log = structlog.get_logger("asterfleet.console.stats")
router = APIRouter()

WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_WINDOW = "1h"
METRICS_WINDOW_S = 300
METRICS_INTERVAL_S = 60.0


def _ip(address: str) -> str:
    host, sep, port = address.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else address


def fleet_namer(book: Directory) -> Any:
    """(node name, balancer name) of a call, from the fleet's address history
    at the call's start; addresses (or capture hosts) where it says nothing."""

    def name(f: CallFacts) -> tuple[str, str]:
        at = f.start_us / 1_000_000
        node = ""
        if f.node:
            held = book.holder(f.node, at)
            node = held.name if held is not None and held.kind == NODE_KIND else f.node
        balancer = ""
        candidates = [capture_key(f.capture_host)] if f.capture_host.isdigit() else []
        if f.balancer_address:
            candidates += [f.balancer_address, _ip(f.balancer_address)]
        for key in candidates:
            held = book.holder(key, at)
            if held is not None and held.kind == BALANCER_KIND:
                balancer = held.name
                break
        if not balancer:
            balancer = f.capture_host if not f.capture_host.isdigit() else ""
            balancer = balancer or f.balancer_address or ""
        return node, balancer

    return name


def named_facts(db: Database, cluster: str, facts: Sequence[CallFacts]) -> list[CallFacts]:
    wanted: set[str] = set()
    for f in facts:
        for a in (f.node, f.balancer_address):
            if a:
                wanted.update((a, _ip(a)))
        if f.capture_host.isdigit():
            wanted.add(capture_key(f.capture_host))
    return named(facts, fleet_namer(directory(db, cluster, wanted)))


# -- Prometheus --------------------------------------------------------------


class CallStatsMetrics:
    """Gauges over the last METRICS_WINDOW_S, one series per node and balancer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["kind", "name"]
        self.window = Gauge(
            "asterfleet_calls_window_seconds",
            "Length of the window the call statistics gauges cover.",
            registry=registry,
        )
        self.calls = Gauge(
            "asterfleet_calls_started",
            "Calls (INVITEs) started in the window, per node and per balancer.",
            labels,
            registry=registry,
        )
        self.asr = Gauge(
            "asterfleet_calls_asr_ratio",
            "Answer-seizure ratio in the window: answered / calls with a final answer.",
            labels,
            registry=registry,
        )
        self.ner = Gauge(
            "asterfleet_calls_ner_ratio",
            "Network effectiveness ratio in the window: answered or refused by the user / "
            "calls with a final answer.",
            labels,
            registry=registry,
        )
        self.pdd = Gauge(
            "asterfleet_calls_post_dial_delay_seconds",
            "Post-dial delay in the window (INVITE to ringing or answer), p50 and p95.",
            [*labels, "quantile"],
            registry=registry,
        )
        self.responses = Gauge(
            "asterfleet_calls_responses",
            "Final answers to callers in the window, by code.",
            [*labels, "code"],
            registry=registry,
        )
        self.mos = Gauge(
            "asterfleet_calls_mos_mean",
            "Mean estimated MOS (RTCP, E-model) of the window's calls that have RTCP.",
            labels,
            registry=registry,
        )

    def update(self, per_member: dict[Member, Stats]) -> None:
        self.window.set(METRICS_WINDOW_S)
        for gauge in (self.calls, self.asr, self.ner, self.pdd, self.responses, self.mos):
            gauge.clear()
        for (kind, name), s in per_member.items():
            self.calls.labels(kind, name).set(s.calls)
            if s.asr is not None:
                self.asr.labels(kind, name).set(s.asr)
            if s.ner is not None:
                self.ner.labels(kind, name).set(s.ner)
            for q, value in (("0.5", s.pdd_p50_ms), ("0.95", s.pdd_p95_ms)):
                if value is not None:
                    self.pdd.labels(kind, name, q).set(value / 1000)
            for code, count in s.codes.items():
                self.responses.labels(kind, name, str(code)).set(count)
            if s.mos_mean is not None:
                self.mos.labels(kind, name).set(s.mos_mean)


def window_stats(store: Store, db: Database, cluster: str, now: float) -> dict[Member, Stats]:
    until = int(now * 1_000_000)
    facts = named_facts(db, cluster, read_facts(store, until - METRICS_WINDOW_S * 1_000_000, until))
    return {m: buckets[0] for m, buckets in by_member(facts).items()}


async def refresh_metrics(request_state: ConsoleState, metrics: CallStatsMetrics) -> None:
    """Recompute the gauges every METRICS_INTERVAL_S (a console task), and
    keep the default window's ranges read, so that the Statistics page opens
    without reading the whole window."""
    st = request_state
    url = st.settings.capture_db
    assert url, "the task runs with capture only"
    store: Store | None = None
    while True:
        try:
            opened = store if store is not None else await asyncio.to_thread(Store, url)
            store = opened
            now = time.time()
            per_member = await asyncio.to_thread(window_stats, opened, st.db, st.ks.cluster, now)
            metrics.update(per_member)
            await asyncio.to_thread(
                window_buckets, ranges_of(st), WINDOWS[DEFAULT_WINDOW], int(now * 1_000_000)
            )
        except sa.exc.SQLAlchemyError as exc:
            log.warning("call_stats_unavailable", error=str(exc).splitlines()[0])
        await asyncio.sleep(METRICS_INTERVAL_S)


# -- the page and the API ------------------------------------------------------


def _window(window: str) -> int:
    if window not in WINDOWS:
        raise UsageError(f"window {window!r}: use one of {', '.join(WINDOWS)}")
    return WINDOWS[window]


#: A window's buckets: (start µs, the tally of the calls that started in it).
Buckets = list[tuple[int, RangeTally]]


def ranges_of(st: ConsoleState) -> RangeTallies:
    """The console's kept range tallies, over the capture store (made on
    first use: the page, the API and the background refresh share them)."""
    url = st.settings.capture_db
    if not url:
        raise LookupError("capture not configured")
    ranges: RangeTallies | None = st.stats_ranges
    if ranges is None:
        store = Store(url)

        def read(start_us: int, end_us: int) -> list[CallFacts]:
            return named_facts(st.db, st.ks.cluster, read_facts(store, start_us, end_us))

        ranges = st.stats_ranges = RangeTallies(read)
    return ranges


def _compute(request: Request, seconds: int, now: float) -> tuple[Buckets, int, int, int]:
    ranges = ranges_of(console_state(request))
    return window_buckets(ranges, seconds, int(now * 1_000_000), BUCKETS)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else ratio * 100


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def member_rows(whole: RangeTally) -> list[dict[str, Any]]:
    rows = []
    for (kind, name), t in sorted(whole.members.items()):
        s = t.stats()
        rows.append(
            {
                "kind": kind, "name": name, "s": s, "asr": _pct(s.asr), "ner": _pct(s.ner),
                "pdd50": _ms(s.pdd_p50_ms), "pdd95": _ms(s.pdd_p95_ms),
                "mos": "–" if s.mos_mean is None else f"{s.mos_mean:.2f}",
                "codes": ", ".join(f"{c}×{n}" for c, n in sorted(s.codes.items())),
            }
        )  # fmt: skip
    return rows


def per_member(buckets: Buckets) -> dict[Member, dict[int, Stats]]:
    """Each node's and balancer's stats per bucket (buckets it had calls in)."""
    out: dict[Member, dict[int, Stats]] = {}
    for b, t in buckets:
        for m, mt in t.members.items():
            out.setdefault(m, {})[b] = mt.stats()
    return dict(sorted(out.items()))


def charts(buckets: Buckets, start: int, end: int, step: int) -> dict[str, Markup]:
    series = per_member(buckets)
    out: dict[str, Markup] = {}
    for kind in (NODE, BALANCER):
        members = sorted((m for m in series if m[0] == kind), key=lambda m: m[1])

        def lines(value: Any, members: list[Member] = members) -> list[Series]:
            return [
                Series(
                    name,
                    tuple(
                        (b + step // 2, v)
                        for b, s in series[(k, name)].items()
                        if (v := value(s)) is not None
                    ),
                )
                for k, name in members
            ]

        for key, title, value, unit, top in (
            ("calls", "Calls started", lambda s: float(s.calls), "", None),
            ("asr", "Answer-seizure ratio", lambda s: _percent(s.asr), "%", 100.0),
            ("ner", "Network effectiveness ratio", lambda s: _percent(s.ner), "%", 100.0),
            ("pdd", "Post-dial delay p95", lambda s: s.pdd_p95_ms, " ms", None),
            ("mos", "Mean MOS", lambda s: s.mos_mean, "", 5.0),
        ):  # fmt: skip
            out[f"{kind}_{key}"] = Markup(  # line_chart escapes every text
                line_chart(f"{title} per {kind}", lines(value), start, end, unit, top)
            )
    return out


@router.get("/stats", include_in_schema=False)
async def stats_page(
    request: Request, window: str = DEFAULT_WINDOW, user: Principal = Depends(page_user)
) -> Response:
    error = ""
    try:
        seconds = _window(window)
    except UsageError as exc:
        error, window, seconds = str(exc), DEFAULT_WINDOW, WINDOWS[DEFAULT_WINDOW]
    try:
        buckets, start, end, step = await asyncio.to_thread(_compute, request, seconds, time.time())
    except LookupError:
        return render(request, "calls_off.html", user, area="stats", configured=False,
                      reason="capture not configured: statistics are computed from captured "
                      "calls (start `asterfleet capture run`, pass --capture-db)")  # fmt: skip
    except sa.exc.SQLAlchemyError as exc:
        log.warning("capture_db_error", error=str(exc).splitlines()[0])
        return render(request, "calls_off.html", user, area="stats", configured=True,
                      status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                      reason="the capture database is unavailable: try again shortly")  # fmt: skip
    whole = merged(t for _b, t in buckets)
    rows = member_rows(whole)
    total = whole.total.stats()
    return render(
        request,
        "stats.html",
        user,
        area="stats",
        err=error,
        window=window,
        windows=list(WINDOWS),
        rows=rows,
        total=total,
        total_asr=_pct(total.asr),
        total_ner=_pct(total.ner),
        charts=charts(buckets, start, end, step),
        bucket_s=step // 1_000_000,
    )


class NumbersOut(BaseModel):
    calls: int = Field(description="calls (INVITEs) started")
    finished: int = Field(description="of which have a final answer")
    answered: int = Field(description="of which were answered (2xx)")
    asr: float | None = Field(description="answer-seizure ratio: answered / finished")
    ner: float | None = Field(
        description="network effectiveness ratio: answered or refused by the user / finished"
    )
    pdd_p50_ms: float | None = Field(description="post-dial delay, median")
    pdd_p95_ms: float | None = Field(description="post-dial delay, 95th percentile")
    codes: dict[str, int] = Field(description="final answers to callers, by code")
    mos_mean: float | None = Field(description="mean estimated MOS of calls with RTCP")


class BucketOut(NumbersOut):
    start_us: int = Field(description="the bucket's start, µs since the epoch")


class MemberOut(BaseModel):
    kind: str = Field(description="node or balancer")
    name: str = Field(description="its id (from the fleet's address history), else its address")
    total: NumbersOut
    buckets: list[BucketOut] = Field(description="buckets with calls, oldest first")


class StatsOut(BaseModel):
    window: str
    start_us: int
    end_us: int
    bucket_s: int
    total: NumbersOut
    members: list[MemberOut]


@router.get(
    "/api/v1/stats",
    response_model=StatsOut,
    tags=["calls"],
    summary="Call statistics per node and per balancer, in time buckets",
    responses=API_ERRORS,
)
async def api_stats(
    request: Request,
    window: str = Query(DEFAULT_WINDOW, description="one of 15m, 1h, 6h, 24h, 7d"),
    who: Principal = Depends(api_reader),
) -> Any:
    """Calls, ASR, NER, post-dial delay p50/p95 (ms), response codes and mean
    MOS, for the whole window and per bucket (a twelfth of it)."""
    try:
        seconds = _window(window)
        buckets, start, end, step = await asyncio.to_thread(_compute, request, seconds, time.time())
    except UsageError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except LookupError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "capture not configured") from None
    whole = merged(t for _b, t in buckets)
    series = per_member(buckets)
    return {
        "window": window,
        "start_us": start,
        "end_us": end,
        "bucket_s": step // 1_000_000,
        "total": whole.total.stats().as_dict(),
        "members": [
            {
                "kind": kind,
                "name": name,
                "total": t.stats().as_dict(),
                "buckets": [
                    {"start_us": b, **s.as_dict()}
                    for b, s in series[(kind, name)].items()
                    if s.calls
                ],
            }
            for (kind, name), t in sorted(whole.members.items())
        ],
    }
