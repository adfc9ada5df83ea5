"""The Calls area: search captured calls, a call's ladder diagram and
messages, its PCAP; the same data as JSON under /api/v1/calls.

Reads the database ``asterfleet capture run --db URL`` writes to, given to
the console as ``--capture-db URL``. The store is opened on first use and
kept; queries run in a worker thread so a slow database never blocks pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from markupsafe import Markup
from pydantic import BaseModel, Field

from asterfleet.auth import lookup_session
from asterfleet.capture.flow import call_flow
from asterfleet.capture.ladder import arrow_label, build_ladder, render_svg
from asterfleet.capture.pager import (
    MAX_PAGE,
    STATUS_CLASSES,
    CallPage,
    decode_cursor,
    encode_cursor,
    page_calls,
)
from asterfleet.capture.pcap import build_pcap
from asterfleet.capture.rtcp import CLOCK_HZ, mos_threshold
from asterfleet.capture.sdp import AudioCodec, negotiated_codec
from asterfleet.capture.search import (
    CallSummary,
    MessageQuery,
    call_messages,
    duration_us,
    parse_time,
    summarise_call,
)
from asterfleet.capture.store import Message, Store, StreamQuality
from asterfleet.capture.tail import TailStep, tail_calls, tail_start
from asterfleet.console import saved_searches
from asterfleet.console.addressbook import party
from asterfleet.console.call_fleet import CallFleet, call_fleet, node_names
from asterfleet.console.live import sse_message
from asterfleet.console.security import (
    API_ERRORS,
    SESSION_COOKIE,
    Principal,
    api_reader,
    page_user,
)
from asterfleet.console.state import console_state
from asterfleet.console.web import render
from asterfleet.errors import UsageError
from asterfleet.fleet.directory import BALANCER, NODE

log = structlog.get_logger("asterfleet.console.calls")
router = APIRouter()

NOT_CONFIGURED = (
    "capture not configured: start `asterfleet capture run --db URL` and pass "
    "--capture-db URL to `asterfleet console` (or set ASTERFLEET_CAPTURE_DB)"
)
PCAP_TYPE = "application/vnd.tcpdump.pcap"
_LOCK = threading.Lock()


class CaptureUnavailable(Exception):
    """No capture database configured, or it cannot be reached."""

    def __init__(self, message: str, configured: bool = True) -> None:
        super().__init__(message)
        self.configured = configured


def _open_store(request: Request) -> Store:
    url = console_state(request).settings.capture_db
    if not url:
        raise CaptureUnavailable(NOT_CONFIGURED, configured=False)
    with _LOCK:
        store: Store | None = getattr(request.app.state, "capture_store", None)
        if store is None:
            store = Store(url)  # creates the table if the collector has not yet
            request.app.state.capture_store = store
        return store


async def _in_store(request: Request, fn: Any, *args: Any) -> Any:
    """Run ``fn(store, *args)`` in a thread; database trouble → CaptureUnavailable."""

    def go() -> Any:
        return fn(_open_store(request), *args)

    try:
        return await asyncio.to_thread(go)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("capture_db_error", error=str(exc).splitlines()[0])
        raise CaptureUnavailable(
            f"the capture database is unavailable ({type(exc).__name__}): try again shortly"
        ) from None


# -- the search --------------------------------------------------------------


def build_query(
    since: str = "",
    until: str = "",
    call_id: str = "",
    from_user: str = "",
    to_user: str = "",
    method: str = "",
    status_code: int | None = None,
    capture_host: str = "",
    now_us: int | None = None,
    status_class: str = "",
    text: str = "",
    options: bool = False,
    mos_below: str = "",
    min_duration: str = "",
    max_duration: str = "",
) -> MessageQuery:
    """The search form's fields as a query; ``method`` may be a status code (``486``)."""
    now = now_us if now_us is not None else int(datetime.now(UTC).timestamp() * 1_000_000)
    method = method.strip()
    if method.isdigit():
        status_code, method = int(method), ""
    elif method and not method.isalpha():
        raise UsageError(f"method or status {method!r}: give a SIP method (INVITE) or code (486)")
    status_class = status_class.strip().lower()
    if status_class and status_class not in STATUS_CLASSES:
        raise UsageError(f"status class {status_class!r}: give one of {', '.join(STATUS_CLASSES)}")
    shortest = duration_us(min_duration, "min duration")
    longest = duration_us(max_duration, "max duration")
    if shortest is not None and longest is not None and shortest > longest:
        raise UsageError(
            f"duration from {min_duration.strip()} to {max_duration.strip()}: "
            "the minimum is above the maximum"
        )
    return MessageQuery(
        call_id=call_id.strip() or None,
        from_user=from_user.strip() or None,
        to_user=to_user.strip() or None,
        since_us=parse_time(since, now) if since.strip() else None,
        until_us=parse_time(until, now) if until.strip() else None,
        method=method or None,
        status=status_code,
        capture_host=capture_host.strip() or None,
        status_class=status_class or None,
        text=text.strip() or None,
        options=options,
        mos_below=mos_threshold(mos_below, "MOS below"),
        min_duration_us=shortest,
        max_duration_us=longest,
    )


async def with_parties(request: Request, q: MessageQuery, node: str, balancer: str) -> MessageQuery:
    """``q`` with the node and balancer filters resolved to their addresses
    and capture ids (the fleet's address history); UsageError for a name the
    fleet never had."""
    node, balancer = node.strip(), balancer.strip()
    if not node and not balancer:
        return q
    st = console_state(request)
    view = st.monitor.view if st.monitor else None

    def resolve() -> MessageQuery:
        return dataclasses.replace(
            q,
            node=party(st.db, st.ks.cluster, NODE, node, view) if node else None,
            balancer=party(st.db, st.ks.cluster, BALANCER, balancer, view) if balancer else None,
        )

    resolved: MessageQuery = await asyncio.to_thread(resolve)
    return resolved


def fmt_us(ts_us: int) -> str:
    """``2024-05-01 12:00:00.123456`` (UTC)."""
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def status_class(code: int | None) -> str:
    if code is None:
        return "muted"
    return "ok" if code < 300 else ("info" if code < 400 else "bad")


def call_href(call_id: str) -> str:
    return "/calls/" + quote(call_id, safe="")


# -- pages -------------------------------------------------------------------


def _unavailable_page(request: Request, user: Principal, exc: CaptureUnavailable) -> Response:
    return render(
        request,
        "calls_off.html",
        user,
        area="calls",
        status_code=status.HTTP_200_OK
        if not exc.configured
        else status.HTTP_503_SERVICE_UNAVAILABLE,
        reason=str(exc),
        configured=exc.configured,
    )


@dataclasses.dataclass
class CallFilters:
    """The Calls page's filters as the query string carries them; the page
    and its live tail read the same ones."""

    since: str = ""
    until: str = ""
    call_id: str = ""
    from_user: str = ""
    to_user: str = ""
    method: str = ""
    capture_host: str = ""
    status_class: str = ""
    text: str = ""
    options: str = ""
    mos_below: str = ""
    node: str = ""
    balancer: str = ""
    min_duration: str = ""
    max_duration: str = ""

    def form(self) -> dict[str, str]:
        fields = dataclasses.asdict(self)
        fields["options"] = "1" if self.options else ""
        return fields

    def query(self) -> MessageQuery:
        """The filters but node and balancer (see :func:`with_parties`)."""
        return build_query(
            self.since, self.until, self.call_id, self.from_user, self.to_user, self.method,
            None, self.capture_host, status_class=self.status_class, text=self.text,
            options=bool(self.options), mos_below=self.mos_below,
            min_duration=self.min_duration, max_duration=self.max_duration,
        )  # fmt: skip

    async def resolved(self, request: Request) -> MessageQuery:
        return await with_parties(request, self.query(), self.node, self.balancer)


FILTER_FIELDS = tuple(f.name for f in dataclasses.fields(CallFilters))


@router.post("/calls/saved", include_in_schema=False)
async def save_search(
    request: Request,
    name: str = Form(""),
    query: str = Form(""),
    user: Principal = Depends(page_user),
) -> Response:
    """Keep the search ``query`` (the Calls page's query string) as ``name``."""
    st = console_state(request)
    cleaned = saved_searches.clean_query(query, FILTER_FIELDS)
    try:
        await asyncio.to_thread(saved_searches.save, st.db, user.username, name, cleaned)
    except UsageError as exc:
        return RedirectResponse(
            "/calls?" + urlencode({**dict(parse_qsl(cleaned)), "saved_error": str(exc)}),
            status_code=303,
        )
    log.info("call_search_saved", user=user.username, name=name, query=cleaned)
    return RedirectResponse("/calls?" + cleaned if cleaned else "/calls", status_code=303)


@router.post("/calls/saved/delete", include_in_schema=False)
async def delete_search(
    request: Request, saved_id: int = Form(0), user: Principal = Depends(page_user)
) -> Response:
    st = console_state(request)
    with contextlib.suppress(UsageError):  # not a console user: nothing of theirs to delete
        await asyncio.to_thread(saved_searches.remove, st.db, user.username, saved_id)
    return RedirectResponse("/calls", status_code=303)


@router.get("/calls", include_in_schema=False)
async def calls_page(
    request: Request,
    filters: CallFilters = Depends(),
    limit: int = 50,
    cursor: str = "",
    page: int = 1,
    saved_error: str = "",
    user: Principal = Depends(page_user),
) -> Response:
    form = filters.form()
    error = saved_error[:300]
    st = console_state(request)
    saved = await asyncio.to_thread(saved_searches.list_saved, st.db, user.username)
    result: CallPage | None = None
    newest = ""
    try:
        if page == 1 and not cursor:
            # Before the page's own query: a call stored in between is on
            # both (the live tail's row replaces the page's), never on neither.
            newest = await _in_store(request, tail_start)
        q = await filters.resolved(request)
        result = await _in_store(
            request, page_calls, q, min(max(limit, 1), MAX_PAGE), decode_cursor(cursor)
        )
    except UsageError as exc:
        error = str(exc)
    except CaptureUnavailable as exc:
        return _unavailable_page(request, user, exc)
    filled = {k: v for k, v in form.items() if v}
    older = ""
    if result is not None and result.next_cursor is not None:
        older = "/calls?" + urlencode(
            {**filled, "cursor": encode_cursor(result.next_cursor), "page": page + 1}
        )
    calls = result.calls if result else []
    names = await _node_names(request, calls)
    rows = [call_row(c, names.get(c.call_id, "")) for c in calls]
    return render(
        request,
        "calls.html",
        user,
        area="calls",
        form=form,
        rows=rows,
        err=error,
        page=page,
        older=older,
        newest="/calls?" + urlencode(filled) if cursor else "",
        truncated=bool(result and result.truncated),
        scanned=result.scanned if result else 0,
        status_classes=STATUS_CLASSES,
        live="/calls/live?" + urlencode({**filled, "after": newest}),
        now_us=_now_us(),
        saved=saved,
        share="/calls?" + urlencode(filled) if filled else "/calls",
        query=urlencode(filled),
    )


def _now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)


LIVE_POLL = 1.0
#: A live tail ends after this long; the browser reconnects (Last-Event-ID) at once.
LIVE_MAX_S = 300.0


@router.get("/calls/live", include_in_schema=False)
async def calls_live(
    request: Request,
    filters: CallFilters = Depends(),
    after: str = "",
    user: Principal = Depends(page_user),
) -> Response:
    """New calls matching the filters, as rendered rows (server-sent events,
    ``event: call``). The stream's ``id:`` is where the tail is: the browser
    sends it back (``Last-Event-ID``) when it reconnects, and the tail goes
    on from there, so no call is missed. A position it cannot go on from
    (see :func:`tail_calls`) starts the tail from now, with an ``event:
    restarted`` saying why."""
    try:
        q = await filters.resolved(request)
    except UsageError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    start = request.headers.get("last-event-id", "").strip() or after.strip()
    st = console_state(request)
    template = st.templates.get_template("_call_row.html")
    cookie = request.cookies.get(SESSION_COOKIE, "")

    async def stream() -> AsyncIterator[str]:
        # The browser's own position is not sent back before the first poll
        # has read it (it holds it already; a reconnect before then sends
        # Last-Event-ID, or the same ?after=).
        position = start
        if not position:
            try:
                position = await _in_store(request, tail_start)
            except CaptureUnavailable:
                position = ""
        yield "retry: 1000\n" + (f"id: {position}\n\n" if position and not start else "\n")
        sent: dict[str, None] = {}
        deadline = asyncio.get_running_loop().time() + LIVE_MAX_S
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(LIVE_POLL)
            if await request.is_disconnected():
                return
            if (
                user.via == "console"
                and await asyncio.to_thread(lookup_session, st.db, cookie) is None
            ):
                yield sse_message("logout", "")
                return
            try:
                if not position:
                    position = await _in_store(request, tail_start)
                    yield f"id: {position}\n\n"
                    continue
                step: TailStep = await _in_store(request, tail_calls, q, position)
            except CaptureUnavailable:
                yield ": capture database unavailable\n\n"
                continue
            if step.restarted:
                log.info("calls_live_restarted", user=user.username, reason=step.restarted)
                yield sse_message("restarted", step.restarted)
            now = _now_us()
            names = await _node_names(request, step.calls)
            out: list[str] = []
            for call in step.calls:
                if call.call_id in sent:
                    continue
                sent[call.call_id] = None
                if len(sent) > 1000:
                    sent.pop(next(iter(sent)))
                html = template.render(r=call_row(call, names.get(call.call_id, "")), now_us=now)
                out.append(sse_message("call", html))
            # The position after the poll's calls, in the same write: a
            # reconnect in between sends them again (the page replaces a
            # call's row), never skips them.
            if step.position != position:
                out.append(f"id: {step.position}\n\n")
                position = step.position
            yield "".join(out) if out else ": keepalive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def call_row(c: CallSummary, node_name: str = "") -> dict[str, Any]:
    """One row of the Calls list (the page and the live tail render the same)."""
    return {
        "call": c,
        "node_name": node_name,
        "href": call_href(c.call_id),
        "start": fmt_us(c.start_us)[:-3],
        "status_class": status_class(c.final_status),
    }


@router.get("/calls/{call_id:path}/pcap", include_in_schema=False)
async def call_pcap(
    request: Request, call_id: str, user: Principal = Depends(page_user)
) -> Response:
    try:
        msgs: list[Message] = await _in_store(request, call_messages, call_id)
    except CaptureUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    if not msgs:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no captured call with Call-ID {call_id!r}")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in call_id)[:80]
    log.info("call_pcap", call_id=call_id, messages=len(msgs), user=user.username)
    return Response(
        build_pcap(msgs),
        media_type=PCAP_TYPE,
        headers={"Content-Disposition": f'attachment; filename="call-{safe}.pcap"'},
    )


@dataclasses.dataclass(frozen=True, slots=True)
class MediaClock:
    """The RTP clock rate a call's RTCP jitter is read at: its negotiated
    codec's (from the SDP), else 8,000 Hz assumed (G.711)."""

    clock_hz: int
    #: The codec's name; "" when the SDP does not name it.
    codec: str
    #: True when the SDP gave the clock rate; False when 8,000 Hz is assumed.
    from_sdp: bool

    @classmethod
    def of(cls, msgs: list[Message]) -> MediaClock:
        codec: AudioCodec | None = negotiated_codec(m.raw for m in msgs)
        if codec is None or codec.clock_hz is None:
            return cls(CLOCK_HZ, codec.name if codec else "", False)
        return cls(codec.clock_hz, codec.name, True)


@router.get("/calls/{call_id:path}", include_in_schema=False)
async def call_page(
    request: Request, call_id: str, user: Principal = Depends(page_user)
) -> Response:
    try:
        msgs: list[Message] = await _in_store(request, call_messages, call_id)
    except CaptureUnavailable as exc:
        return _unavailable_page(request, user, exc)
    if not msgs:
        return render(
            request,
            "calls_off.html",
            user,
            area="calls",
            status_code=status.HTTP_404_NOT_FOUND,
            reason=f"no captured call with Call-ID {call_id!r}: it may have aged out "
            "(retention) or not been captured",
            configured=True,
        )
    summary = summarise_call(msgs)
    media = MediaClock.of(msgs)
    streams = await _in_store(request, Store.stream_quality, call_id, media.clock_hz)
    fleet = await _fleet_of(request, msgs, summary)
    flow = call_flow(msgs)
    start = min(f.ts_us for f in flow)
    rows = [
        {
            "m": f.message,
            "time": fmt_us(f.ts_us),
            "offset_ms": f"{(f.ts_us - start) / 1000:.3f}",
            "status_class": status_class(f.message.status)
            if f.message.status is not None
            else "info",
            "capture_hosts": ", ".join(f.capture_hosts),
            "src_name": fleet.names.get(f.message.src, ""),
            "dst_name": fleet.names.get(f.message.dst, ""),
        }
        for f in flow
    ]
    return render(
        request,
        "call.html",
        user,
        area="calls",
        summary=summary,
        node_name=fleet.node or fleet.names.get(summary.node or "", ""),
        node_state=fleet.state,
        fleet_events=[
            {"e": e, "time": fmt_us(int(e.at * 1_000_000))[:-3], "mine": e.id in fleet.mine}
            for e in fleet.events
        ],
        start=fmt_us(summary.start_us),
        status_class=status_class(summary.final_status),
        # render_svg escapes every text
        ladder=Markup(render_svg(build_ladder(msgs, fleet.names, fleet.notes))),
        rows=rows,
        streams=streams,
        media=media,
        pcap_href=call_href(call_id) + "/pcap",
    )


async def _node_names(request: Request, calls: list[CallSummary]) -> dict[str, str]:
    st = console_state(request)
    try:
        names: dict[str, str] = await asyncio.to_thread(node_names, st.db, st.ks.cluster, calls)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("fleet_history_unavailable", error=str(exc).splitlines()[0])
        return {}
    return names


async def _fleet_of(request: Request, msgs: list[Message], summary: CallSummary) -> CallFleet:
    """The fleet around the call; without it (database trouble) addresses only."""
    st = console_state(request)
    view = st.monitor.view if st.monitor else None
    try:
        fleet: CallFleet = await asyncio.to_thread(
            call_fleet, st.db, st.ks.cluster, view, msgs, summary
        )
    except sa.exc.SQLAlchemyError as exc:
        log.warning("fleet_history_unavailable", error=str(exc).splitlines()[0])
        return CallFleet({})
    return fleet


# -- JSON API ----------------------------------------------------------------


class CallOut(BaseModel):
    call_id: str
    start: str = Field(description="first message, ISO 8601 UTC")
    start_us: int = Field(description="first message, µs since the epoch")
    duration_s: float = Field(
        description="first to last message (of a call in progress: so far, as captured)"
    )
    method: str = Field(description="INVITE, or the first request of calls without one")
    from_user: str
    to_user: str
    final_status: int | None = Field(description="last final answer to the INVITE")
    node: str | None = Field(
        description="the node that took the call: the host that sent the final answer"
    )
    messages: int = Field(
        description="distinct SIP messages (a message two capture hosts saw counts once)"
    )
    duplicates: int = Field(
        description="captures merged because another capture host reported the same message"
    )
    capture_hosts: list[str] = Field(
        description="capture hosts (HEP senders: balancers, Asterisk) that saw the call"
    )
    state: str = Field(
        description="ringing, in progress, ended, failed, cancelled; pending or done for "
        "transactions outside a call (OPTIONS, REGISTER)"
    )
    in_progress: bool = Field(description="ringing or in progress: the call has not ended")


class CallsOut(BaseModel):
    calls: list[CallOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for older calls; null: no more")
    scanned: int = Field(description="messages read to build this page")
    truncated: bool = Field(description="the scan hit its bound first: narrow the time range")


class MessageOut(BaseModel):
    id: int
    ts_us: int = Field(description="capture time, µs since the epoch")
    time: str = Field(description="capture time, ISO 8601 UTC")
    src: str
    dst: str
    transport: str
    capture_id: int
    capture_host: str = Field(description="the HEP sender that captured it (its capture name)")
    method: str | None
    status: int | None
    cseq: str
    from_user: str
    to_user: str
    user_agent: str
    correlation_id: str
    text: str = Field(description="the raw SIP message")


class StreamOut(BaseModel):
    source_ssrc: int = Field(description="SSRC of the RTP stream reported on")
    reporter: str = Field(description="address of the stream's receiver that sent the report")
    reports: int = Field(description="RTCP reports received for this stream")
    fraction_lost: float = Field(description="share lost since the previous report, 0..1")
    packets_lost: int = Field(description="packets lost since the stream began")
    jitter_ms: float
    rtt_ms: float | None = Field(description="round-trip time; null when it cannot be told")
    mos: float = Field(description="estimated MOS (simplified E-model, G.711), latest report")
    min_mos: float = Field(description="lowest estimated MOS of any report")
    clock_hz: int = Field(description="RTP clock rate the jitter (timestamp units) is read at")


class NodeStateOut(BaseModel):
    state: str = Field(description="active, draining, drained, maintenance, unhealthy, starting")
    since: float | None = Field(description="when it took that state, seconds since the epoch")
    by: str = Field(description="who made the change (agent: the node's own agent)")
    event: str = Field(description="the event that set it (draining, undrained, joined, …)")


class FleetEventOut(BaseModel):
    id: int
    at: float = Field(description="seconds since the epoch")
    kind: str
    node: str
    actor: str
    message: str


class CallFleetOut(BaseModel):
    names: dict[str, str] = Field(
        description="address -> name: caller, balancer and node ids from the fleet's history"
    )
    node_name: str | None = Field(description="id of the node that took the call")
    node_state: NodeStateOut | None = Field(description="that node's state at the call's start")
    events: list[FleetEventOut] = Field(description="fleet events during the call, oldest first")


class FlowOut(BaseModel):
    id: int = Field(description="the message drawn (the sender's capture of it)")
    src: str = Field(description="from, as its peers see it (a host's own spelling unaliased)")
    dst: str
    cseq: str
    label: str = Field(description="method, or status and reason")
    capture_hosts: list[str] = Field(description="capture hosts that saw this message")
    copies: list[int] = Field(description="ids of every capture of it, earliest first")


class MediaOut(BaseModel):
    clock_hz: int = Field(description="RTP clock rate of the call's codec, Hz")
    codec: str = Field(description="the codec the SDP answer chose first (PCMU, opus, G722)")
    from_sdp: bool = Field(description="false: the SDP did not tell, 8000 Hz (G.711) is assumed")


class CallDetailOut(BaseModel):
    call: CallOut
    messages: list[MessageOut]
    flow: list[FlowOut] = Field(
        description="the ladder: one entry per SIP message (captures by both ends of a hop "
        "merged), in causal order"
    )
    streams: list[StreamOut] = Field(description="media quality per stream, from RTCP (HEP 5)")
    media: MediaOut = Field(description="the codec whose RTP clock rate the jitter is read at")
    fleet: CallFleetOut = Field(description="the call's hosts and node as the fleet knew them")


def _message_out(m: Message) -> MessageOut:
    return MessageOut(
        id=m.id,
        ts_us=m.ts_us,
        time=datetime.fromtimestamp(m.ts_us / 1_000_000, UTC).isoformat(),
        src=m.src,
        dst=m.dst,
        transport=m.transport,
        capture_id=m.capture_id,
        capture_host=m.capture_host,
        method=m.method,
        status=m.status,
        cseq=m.cseq,
        from_user=m.from_user,
        to_user=m.to_user,
        user_agent=m.user_agent,
        correlation_id=m.correlation_id,
        text=m.text,
    )


@router.get(
    "/api/v1/calls",
    response_model=CallsOut,
    tags=["calls"],
    summary="Search captured calls by start, newest first",
    responses=API_ERRORS,
)
async def api_calls(
    request: Request,
    since: str = Query("", description="ISO 8601 time (UTC if no zone) or an age: 15m, 2h, 1d"),
    until: str = Query("", description="ISO 8601 time or an age"),
    call_id: str = Query("", description="exact Call-ID"),
    from_user: str = Query("", description="From user, prefix"),
    to_user: str = Query("", description="To user, prefix"),
    method: str = Query("", description="SIP method of a message (INVITE, BYE, …)"),
    status_code: int | None = Query(
        None, alias="status", ge=100, le=699, description="status code of a message (486)"
    ),
    capture_host: str = Query(
        "", description="capture host (HEP sender): its capture name or capture id"
    ),
    status_class: str = Query(
        "", description="2xx … 6xx: the call has an answer of that class; none: unanswered"
    ),
    text: str = Query("", description="text anywhere in one of the call's messages"),
    options: bool = Query(False, description="also list OPTIONS probes (hidden otherwise)"),
    mos_below: str = Query(
        "", description="calls with a stream whose estimated MOS (RTCP) fell below this (3.5)"
    ),
    node: str = Query("", description="node id: calls sent to or answered by it"),
    balancer: str = Query("", description="balancer id: calls it captured or relayed"),
    min_duration: str = Query("", description="calls lasting at least this long: 90, 30s, 2m"),
    max_duration: str = Query("", description="calls lasting at most this long (so far)"),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    cursor: str = Query("", description="next_cursor of the previous page"),
    who: Principal = Depends(api_reader),
) -> Any:
    """Calls matching every filter given, by start, newest first (the
    balancers' OPTIONS probes only with ``options=true``). Page with
    ``next_cursor``."""
    try:
        q = build_query(
            since, until, call_id, from_user, to_user, method, status_code, capture_host,
            status_class=status_class, text=text, options=options,
            mos_below=mos_below, min_duration=min_duration, max_duration=max_duration,
        )  # fmt: skip
        q = await with_parties(request, q, node, balancer)
        result: CallPage = await _in_store(request, page_calls, q, limit, decode_cursor(cursor))
    except UsageError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except CaptureUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return CallsOut(
        calls=[CallOut.model_validate(c.as_dict()) for c in result.calls],
        next_cursor=encode_cursor(result.next_cursor) or None,
        scanned=result.scanned,
        truncated=result.truncated,
    )


@router.get(
    "/api/v1/calls/{call_id:path}",
    response_model=CallDetailOut,
    tags=["calls"],
    summary="One call: its summary and every message, in capture order",
    responses=API_ERRORS,
)
async def api_call(request: Request, call_id: str, who: Principal = Depends(api_reader)) -> Any:
    try:
        msgs: list[Message] = await _in_store(request, call_messages, call_id)
        media = MediaClock.of(msgs)
        streams: list[StreamQuality] = await _in_store(
            request, Store.stream_quality, call_id, media.clock_hz
        )
    except CaptureUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    if not msgs:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no captured call with Call-ID {call_id!r}")
    summary = summarise_call(msgs)
    fleet = await _fleet_of(request, msgs, summary)
    return CallDetailOut(
        call=CallOut.model_validate(summary.as_dict()),
        messages=[_message_out(m) for m in msgs],
        flow=[
            FlowOut(
                id=f.message.id,
                src=f.message.src,
                dst=f.message.dst,
                cseq=f.message.cseq,
                label=arrow_label(f.message),
                capture_hosts=list(f.capture_hosts),
                copies=[c.id for c in f.copies],
            )
            for f in call_flow(msgs)
        ],
        streams=[StreamOut.model_validate(dataclasses.asdict(s)) for s in streams],
        media=MediaOut.model_validate(dataclasses.asdict(media)),
        fleet=CallFleetOut.model_validate(fleet.as_dict()),
    )
