"""Call statistics per node and per balancer over time (pure, but for
:func:`read_facts`).

Each call opened by an INVITE becomes one :class:`CallFacts` (its start, the
caller's final answer, the node that answered, the balancer, post-dial delay
and media quality); :func:`summarise` folds facts into :class:`Stats`, and
:func:`by_member` does so per node and per balancer, in time buckets. Both
go through a :class:`Tally`, which adds up: the tally of two sets of calls
is the sum of theirs, so the console keeps the tallies of time ranges that
are over (:class:`RangeTally`) and adds them up instead of reading every
call of a long window again.

Definitions (ITU-T E.411 / E.425 in spirit, on what capture can see):

- **calls**: INVITEs that opened a call (seizures), by their start;
- **ASR**, answer-seizure ratio: calls answered (2xx) / calls with a final
  answer (calls still ringing are not counted either way);
- **NER**, network effectiveness ratio: calls answered, or refused by the
  called user rather than the network (:data:`USER_CODES`: busy, decline, no
  answer, caller gave up, wrong number) / calls with a final answer;
- **post-dial delay**: the INVITE to the first ringing (180/183) or final
  answer sent back to the caller, p50 and p95 by nearest rank;
- **response codes**: the caller's final answers, by code;
- **mean MOS**: the mean over calls of each call's mean estimated MOS (RTCP,
  see :mod:`asterfleet.capture.rtcp`), calls without RTCP left out; as
  stored, at the RTP clock of the call's codec
  (:mod:`asterfleet.capture.mediaclock`), as its call page shows it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import sqlalchemy as sa

from asterfleet.capture.store import Store
from asterfleet.capture.store import _hostport as hostport  # Message.src's own form
from asterfleet.capture.tables import in_calls, messages, rtcp_reports

#: Final answers that mean the user, not the network, decided (count for NER).
USER_CODES = frozenset({404, 480, 484, 486, 487, 600, 603})
NODE, BALANCER = "node", "balancer"
#: At most this many calls are read for one statistics window.
MAX_CALLS = 20_000


class Hop(NamedTuple):
    """One message of a call's INVITE transactions, as statistics read it
    (a tuple: tens of thousands are built per window)."""

    call_id: str
    ts_us: int
    method: str | None
    status: int | None
    src: str
    dst: str
    capture_host: str  # HEP capture name, else the capture id


@dataclass(frozen=True)
class CallFacts:
    call_id: str
    start_us: int
    final: int | None  # the caller's final answer; None: still ringing
    node: str | None  # address of the node that sent its final answer
    balancer_address: str | None  # where the caller sent the INVITE
    capture_host: str  # who captured that INVITE (a balancer's capture id)
    pdd_ms: float | None
    mos: float | None = None
    #: Names the console resolved (the fleet's address history); else addresses.
    node_name: str = ""
    balancer_name: str = ""


def call_facts(hops: Sequence[Hop]) -> CallFacts | None:
    """The facts of one call from its INVITE-transaction messages; None when
    no INVITE was captured."""
    ordered = sorted(hops, key=lambda h: h.ts_us)
    first = next((h for h in ordered if h.method == "INVITE"), None)
    if first is None:
        return None
    caller = first.src
    to_caller = [h for h in ordered if h.status is not None and h.dst == caller]
    finals = [h for h in to_caller if h.status is not None and h.status >= 200]
    final = finals[0].status if finals else None
    early = next((h for h in to_caller if h.status is not None and h.status > 100), None)
    pdd = None if early is None else (early.ts_us - first.ts_us) / 1000
    from_nodes = [
        h for h in ordered if h.status is not None and h.status >= 200 and h.dst != caller
    ]
    same = [h for h in from_nodes if h.status == final] or from_nodes
    forwarded = [h for h in ordered if h.method == "INVITE" and h.src != caller]
    node: str | None
    if same:
        node = same[-1].src  # the node whose answer the caller got
    elif forwarded:
        node = forwarded[-1].dst  # no answer yet: where the call rings
    else:
        node = finals[0].src if finals else None
    return CallFacts(
        call_id=first.call_id,
        start_us=first.ts_us,
        final=final,
        node=node,
        balancer_address=first.dst,
        capture_host=first.capture_host,
        pdd_ms=pdd,
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Stats:
    calls: int = 0
    finished: int = 0
    answered: int = 0
    user_refused: int = 0
    pdd_p50_ms: float | None = None
    pdd_p95_ms: float | None = None
    codes: dict[int, int] = field(default_factory=dict)
    mos_mean: float | None = None

    @property
    def asr(self) -> float | None:
        return self.answered / self.finished if self.finished else None

    @property
    def ner(self) -> float | None:
        return (self.answered + self.user_refused) / self.finished if self.finished else None

    def as_dict(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "finished": self.finished,
            "answered": self.answered,
            "asr": self.asr,
            "ner": self.ner,
            "pdd_p50_ms": self.pdd_p50_ms,
            "pdd_p95_ms": self.pdd_p95_ms,
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "mos_mean": self.mos_mean,
        }


#: Post-dial delays are tallied to this resolution (tenths of a millisecond).
PDD_STEPS_PER_MS = 10


def _rank(counts: Counter[int], q: float) -> int | None:
    """Nearest-rank percentile of the values counted in ``counts``."""
    n = sum(counts.values())
    if not n:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return None  # not reached


@dataclass
class Tally:
    """What :class:`Stats` is computed from, in a form that adds up."""

    calls: int = 0
    finished: int = 0
    answered: int = 0
    user_refused: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    pdd: Counter[int] = field(default_factory=Counter)  # in 1/PDD_STEPS_PER_MS ms
    mos_sum: float = 0.0
    mos_calls: int = 0

    def add(self, f: CallFacts) -> None:
        self.calls += 1
        if f.final is not None:
            self.finished += 1
            self.answered += 200 <= f.final < 300
            self.user_refused += f.final in USER_CODES
            self.codes[f.final] += 1
        if f.pdd_ms is not None:
            self.pdd[round(f.pdd_ms * PDD_STEPS_PER_MS)] += 1
        if f.mos is not None:
            self.mos_sum += f.mos
            self.mos_calls += 1

    def merge(self, other: Tally) -> None:
        """Add ``other``'s calls to this tally (``other`` is left as it is)."""
        self.calls += other.calls
        self.finished += other.finished
        self.answered += other.answered
        self.user_refused += other.user_refused
        self.codes.update(other.codes)
        self.pdd.update(other.pdd)
        self.mos_sum += other.mos_sum
        self.mos_calls += other.mos_calls

    def stats(self) -> Stats:
        p50, p95 = _rank(self.pdd, 0.5), _rank(self.pdd, 0.95)
        return Stats(
            calls=self.calls,
            finished=self.finished,
            answered=self.answered,
            user_refused=self.user_refused,
            pdd_p50_ms=None if p50 is None else p50 / PDD_STEPS_PER_MS,
            pdd_p95_ms=None if p95 is None else p95 / PDD_STEPS_PER_MS,
            codes=dict(self.codes),
            mos_mean=self.mos_sum / self.mos_calls if self.mos_calls else None,
        )


def tally(facts: Iterable[CallFacts]) -> Tally:
    out = Tally()
    for f in facts:
        out.add(f)
    return out


def summarise(facts: Iterable[CallFacts]) -> Stats:
    return tally(facts).stats()


#: (kind, name): a node or a balancer.
Member = tuple[str, str]


def members_of(f: CallFacts) -> list[Member]:
    out: list[Member] = []
    node = f.node_name or f.node
    if node:
        out.append((NODE, node))
    balancer = f.balancer_name or f.balancer_address
    if balancer:
        out.append((BALANCER, balancer))
    return out


@dataclass
class RangeTally:
    """The calls that started in one time range: all of them, and per node
    and per balancer (a call counts for both its node and its balancer)."""

    total: Tally = field(default_factory=Tally)
    members: dict[Member, Tally] = field(default_factory=dict)

    def add(self, f: CallFacts) -> None:
        self.total.add(f)
        for m in members_of(f):
            self.members.setdefault(m, Tally()).add(f)

    def merge(self, other: RangeTally) -> None:
        """Add ``other``'s calls (``other`` is left as it is)."""
        self.total.merge(other.total)
        for m, t in other.members.items():
            self.members.setdefault(m, Tally()).merge(t)


def tally_range(facts: Iterable[CallFacts]) -> RangeTally:
    out = RangeTally()
    for f in facts:
        out.add(f)
    return out


def merged(tallies: Iterable[RangeTally]) -> RangeTally:
    out = RangeTally()
    for t in tallies:
        out.merge(t)
    return out


def by_member(
    facts: Iterable[CallFacts], step_us: int | None = None, origin_us: int = 0
) -> dict[Member, dict[int, Stats]]:
    """Stats per node and per balancer; with ``step_us``, per time bucket
    (keyed by the bucket's start in µs, from ``origin_us``), else one bucket 0."""
    grouped: dict[Member, dict[int, Tally]] = {}
    for f in facts:
        bucket = 0
        if step_us:
            bucket = origin_us + (f.start_us - origin_us) // step_us * step_us
        for m in members_of(f):
            grouped.setdefault(m, {}).setdefault(bucket, Tally()).add(f)
    return {
        m: {b: t.stats() for b, t in sorted(buckets.items())}
        for m, buckets in sorted(grouped.items())
    }


def named(
    facts: Iterable[CallFacts], name: Callable[[CallFacts], tuple[str, str]]
) -> list[CallFacts]:
    """``facts`` with (node name, balancer name) from ``name`` (the console's look-up)."""
    out = []
    for f in facts:
        node, balancer = name(f)
        out.append(replace(f, node_name=node, balancer_name=balancer))
    return out


# -- the one I/O function ------------------------------------------------------


def read_facts(store: Store, since_us: int, until_us: int) -> list[CallFacts]:
    """The facts of the calls whose first INVITE is in [``since_us``,
    ``until_us``) (at most :data:`MAX_CALLS`, the newest), with their MOS.
    Ranges that meet count each call once."""
    c = messages.c
    r = rtcp_reports.c
    opened = (
        sa.select(c.call_id)
        .where(
            c.opens_call == sa.true(),
            c.method == "INVITE",
            c.ts_us >= since_us,
            c.ts_us < until_us,
        )
        .group_by(c.call_id)
        .order_by(sa.func.max(c.ts_us).desc())
        .limit(MAX_CALLS)
    )
    hops_q = sa.select(
        c.call_id, c.ts_us, c.method, c.status, c.src_ip, c.src_port,
        c.dst_ip, c.dst_port, c.capture_host, c.capture_id,
    ).where(in_calls(c.call_id, opened, store.dialect), c.cseq.like("% INVITE"))  # fmt: skip
    mos_q = (
        sa.select(r.call_id, sa.func.avg(r.mos)).where(r.call_id.in_(opened)).group_by(r.call_id)
    )
    hops: dict[str, list[Hop]] = {}
    with store.engine.connect() as conn:
        for cid, ts, method, status, sip, sport, dip, dport, host, capture_id in conn.execute(
            hops_q
        ).all():
            hops.setdefault(cid, []).append(
                Hop(cid, ts, method, status, hostport(sip, sport), hostport(dip, dport),
                    host or str(capture_id))
            )  # fmt: skip
        moses = {cid: float(mos) for cid, mos in conn.execute(mos_q).all()}
    out = []
    for cid, call_hops in hops.items():
        facts = call_facts(call_hops)
        # A call whose first INVITE is before the range (its forwarded copy in it) is not ours.
        if facts is not None and since_us <= facts.start_us < until_us:
            out.append(replace(facts, mos=moses[cid]) if cid in moses else facts)
    return out
