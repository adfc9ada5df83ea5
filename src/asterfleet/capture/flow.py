"""One call's messages as the call flow: one entry per SIP message, in causal order.

Two rules, both pure:

**One message, one arrow.** When both ends of a hop send HEP (Kamailio and
Asterisk on the balancer-to-node hop), the same SIP message is captured
twice. Two captures are the same message when they share Call-ID, CSeq,
method or status, the top Via branch, source and destination address, come
from *different* capture hosts (a host that captures the same message twice
saw a retransmission) and lie within :data:`COPY_WINDOW_US` of each other.
They become one :class:`FlowMessage` carrying every copy; its time is the
sender's copy's. A capture host's own address is the one every message it
captured in the call shares (Kamailio sees both hops, so its address is the
one common to all of them); the copy of the host that sent the message (or
else the one of the host that did not receive it) is the sender's. When
neither can be told, the earliest copy stands in.

**One host, one address.** A capture host may spell its own address
differently from the peers that send to it: res_hep_pjsip reports, for
UDP, the address the kernel would send from towards the peer rather than
the one Asterisk is bound to (a box bound to 127.0.0.3 reports 127.0.0.1
when Kamailio is on 127.0.0.1; the same on a multi-homed box). Two captures
of one message by different hosts (same Call-ID, CSeq, method or status,
branch, within the window) that agree on one end and on the other end's
port, where one host calls the differing address its own and the other host
does not, are one endpoint spelt twice: :func:`unalias` rewrites the
self-reported spelling to the one its peer sees (the address the fleet
published), before the copies are merged.

**Causal order.** Asterisk stamps the messages it receives to the
millisecond only, so time order can put an effect before its cause. Within
:data:`CAUSAL_TOLERANCE_US` these orders win over the timestamps:

- a request before its responses on the same hop (same branch and CSeq);
- an INVITE, and its final response, before the ACK or CANCEL of that CSeq;
- a message before the copy a proxy forwards of it (same method or status
  and CSeq, sent on by the host that received it; not 100 Trying, which
  each hop sends itself).

A constraint that contradicts the timestamps by more than the tolerance is
not applied (it is more likely a retransmission than a clock that far off).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from asterfleet.capture.store import Message

#: Two captures of one message by different hosts are at most this far apart.
COPY_WINDOW_US = 200_000
#: Causal order overrides timestamps that disagree by at most this much.
CAUSAL_TOLERANCE_US = 50_000


def top_via_branch(raw: bytes) -> str:
    """The ``branch`` parameter of the first Via header (``""`` when none)."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end]
    low = head.lower()
    for name in (b"\nvia:", b"\nv:"):
        at = low.find(name)
        if at >= 0:
            break
    else:
        return ""
    start = at + len(name)
    stop = head.find(b"\n", start)
    top = head[start : stop if stop >= 0 else len(head)].split(b",", 1)[0]
    for param in top.split(b";")[1:]:
        key, _, val = param.strip().partition(b"=")
        if key.lower() == b"branch":
            return val.strip().decode("utf-8", "replace")
    return ""


def capture_host(msg: Message) -> str:
    """The capture host that sent this copy: its HEP name, else its capture id."""
    return msg.capture_host or str(msg.capture_id)


@dataclass(frozen=True)
class FlowMessage:
    """One SIP message of a call, with every capture of it."""

    message: Message  # the sender's copy (see the module's docstring)
    copies: tuple[Message, ...]  # every capture, earliest first
    branch: str

    @property
    def ts_us(self) -> int:
        return self.message.ts_us

    @property
    def capture_hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(capture_host(m) for m in self.copies))

    @property
    def is_request(self) -> bool:
        return self.message.method is not None

    @property
    def cseq_number(self) -> str:
        return self.message.cseq.partition(" ")[0]

    @property
    def cseq_method(self) -> str:
        return self.message.cseq.rpartition(" ")[2]


Endpoint = tuple[str, int]


def _alias(x: Message, y: Message, own: dict[str, set[str]]) -> tuple[Endpoint, Endpoint] | None:
    """(x's spelling, y's spelling) of the one end of the hop that ``x``'s
    capture host reports as its own address and ``y``'s does not."""
    ends_x = ((x.src_ip, x.src_port), (x.dst_ip, x.dst_port))
    ends_y = ((y.src_ip, y.src_port), (y.dst_ip, y.dst_port))
    for same, other in ((0, 1), (1, 0)):
        ex, ey = ends_x[other], ends_y[other]
        if ends_x[same] != ends_y[same] or ex == ey or ex[1] != ey[1]:
            continue
        spelt_x = x.src if other == 0 else x.dst
        spelt_y = y.src if other == 0 else y.dst
        if spelt_x in own.get(capture_host(x), ()) and spelt_y not in own.get(capture_host(y), ()):
            return ex, ey
    return None


def address_aliases(
    msgs: Sequence[Message], window_us: int = COPY_WINDOW_US
) -> dict[Endpoint, Endpoint]:
    """A capture host's own address as it reports it -> as its peers see it
    (see the module's docstring); empty when every host agrees."""
    if len({capture_host(m) for m in msgs}) < 2:
        return {}
    own = capture_host_addresses(msgs)
    groups: dict[tuple[object, ...], list[Message]] = {}
    for m in msgs:
        key = (m.call_id, m.cseq, m.method, m.status, top_via_branch(m.raw))
        groups.setdefault(key, []).append(m)
    aliases: dict[Endpoint, Endpoint] = {}
    for group in groups.values():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if capture_host(a) == capture_host(b) or abs(a.ts_us - b.ts_us) > window_us:
                    continue
                for x, y in ((a, b), (b, a)):
                    found = _alias(x, y, own)
                    if found is not None:
                        aliases.setdefault(*found)
    return aliases


def unalias(msgs: Sequence[Message], window_us: int = COPY_WINDOW_US) -> list[Message]:
    """The messages with each host's own address spelt as its peers see it."""
    aliases = address_aliases(msgs, window_us)
    if not aliases:
        return list(msgs)
    out = []
    for m in msgs:
        src = aliases.get((m.src_ip, m.src_port), (m.src_ip, m.src_port))
        dst = aliases.get((m.dst_ip, m.dst_port), (m.dst_ip, m.dst_port))
        if src != (m.src_ip, m.src_port) or dst != (m.dst_ip, m.dst_port):
            m = dataclasses.replace(
                m, src_ip=src[0], src_port=src[1], dst_ip=dst[0], dst_port=dst[1]
            )
        out.append(m)
    return out


def merge_copies(msgs: Sequence[Message], window_us: int = COPY_WINDOW_US) -> list[FlowMessage]:
    """Captures of the same message by different hosts, merged (addresses
    unaliased first, see :func:`unalias`); time order."""
    ordered = sorted(unalias(msgs, window_us), key=lambda m: (m.ts_us, m.id))
    groups: list[list[Message]] = []
    branches: list[str] = []
    open_by_key: dict[tuple[object, ...], list[int]] = {}
    for msg in ordered:
        branch = top_via_branch(msg.raw)
        key = (msg.call_id, msg.cseq, msg.method, msg.status, branch, msg.src, msg.dst)
        host = capture_host(msg)
        target = None
        for index in open_by_key.get(key, ()):
            group = groups[index]
            if msg.ts_us - group[0].ts_us <= window_us and all(
                capture_host(m) != host for m in group
            ):
                target = index
                break
        if target is None:
            open_by_key.setdefault(key, []).append(len(groups))
            groups.append([msg])
            branches.append(branch)
        else:
            groups[target].append(msg)
    addresses = capture_host_addresses(ordered)
    return [
        FlowMessage(_sender_copy(g, addresses), tuple(g), b)
        for g, b in zip(groups, branches, strict=True)
    ]


def capture_host_addresses(msgs: Sequence[Message]) -> dict[str, set[str]]:
    """Per capture host, the addresses in every message it captured: its own."""
    out: dict[str, set[str]] = {}
    for m in msgs:
        host = capture_host(m)
        ends = {m.src, m.dst}
        out[host] = out[host] & ends if host in out else ends
    return out


def column_names(msgs: Sequence[Message]) -> dict[str, str]:
    """Names for a call's addresses: the capture host that owns an address
    (the one address every message it captured shares, once the addresses
    of other capture hosts are set aside), and ``caller`` for the sender of
    the first request that came from no named host. Addresses left unnamed are
    not in the result. Addresses are unaliased first (see :func:`unalias`)."""
    msgs = unalias(msgs)
    own = capture_host_addresses(msgs)
    names: dict[str, str] = {}
    progress = True
    while progress:
        progress = False
        for host, addresses in own.items():
            left = addresses - names.keys()
            if len(left) == 1 and host not in names.values():
                names[left.pop()] = host
                progress = True
    first = min(
        (m for m in msgs if m.method is not None and m.src not in names),
        key=lambda m: (m.ts_us, m.id),
        default=None,
    )
    if first is not None:
        names[first.src] = "caller"
    return names


def _sender_copy(copies: Sequence[Message], addresses: dict[str, set[str]]) -> Message:
    if len(copies) == 1:
        return copies[0]

    def role(m: Message) -> str:
        own = addresses.get(capture_host(m), set())
        if m.src in own and m.dst not in own:
            return "sender"
        if m.dst in own and m.src not in own:
            return "receiver"
        return "?"

    roles = [(role(m), m) for m in copies]
    for r, m in roles:
        if r == "sender":
            return m
    others = [m for r, m in roles if r != "receiver"]
    if others and len(others) < len(copies):
        return others[0]
    return copies[0]


def _must_precede(a: FlowMessage, b: FlowMessage) -> bool:
    """Does SIP say ``a`` happened before ``b``?"""
    ma, mb = a.message, b.message
    if a.cseq_number != b.cseq_number:
        return False
    same_cseq = ma.cseq == mb.cseq
    # A request before its responses, on the same hop.
    if (
        a.is_request
        and not b.is_request
        and same_cseq
        and a.branch
        and a.branch == b.branch
        and mb.src == ma.dst
    ):
        return True
    # The INVITE and its final answer before the ACK or CANCEL of that CSeq.
    if b.is_request and mb.method in ("ACK", "CANCEL") and a.cseq_method == "INVITE":
        if a.is_request and ma.method == "INVITE" and (ma.src, ma.dst) == (mb.src, mb.dst):
            return True
        if (
            mb.method == "ACK"
            and not a.is_request
            and (ma.status or 0) >= 200
            and (ma.src, ma.dst) == (mb.dst, mb.src)
        ):
            return True
    # A message before the copy a proxy sends on: same method or status and
    # CSeq, leaving from the host it arrived at, towards someone else. (A
    # 100 Trying is never sent on: each hop makes its own.)
    return (
        same_cseq
        and ma.status != 100
        and a.is_request == b.is_request
        and ma.method == mb.method
        and ma.status == mb.status
        and mb.src == ma.dst
        and mb.dst != ma.src
    )


def causal_order(
    flow: Sequence[FlowMessage], tolerance_us: int = CAUSAL_TOLERANCE_US
) -> list[FlowMessage]:
    """Time order, except where SIP's causality says otherwise (within
    ``tolerance_us``): a topological sort that always takes the earliest
    message whose causes are all placed."""
    items = sorted(flow, key=lambda f: (f.ts_us, f.message.id))
    n = len(items)
    after: list[list[int]] = [[] for _ in range(n)]
    waiting = [0] * n
    # Only messages of one CSeq number constrain each other.
    by_cseq: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_cseq.setdefault(item.cseq_number, []).append(i)
    for group in by_cseq.values():
        for i in group:
            a = items[i]
            for j in group:
                b = items[j]
                if i != j and b.ts_us >= a.ts_us - tolerance_us and _must_precede(a, b):
                    after[i].append(j)
                    waiting[j] += 1
    ready = [(items[i].ts_us, i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(ready)
    placed = [False] * n
    out: list[FlowMessage] = []
    while len(out) < n:
        if not ready:
            # A cycle (contradictory captures): take the earliest left, by time.
            i = next(k for k in range(n) if not placed[k])
            waiting[i] = 0
            ready.append((items[i].ts_us, i))
        _, i = heapq.heappop(ready)
        if placed[i]:
            continue
        placed[i] = True
        out.append(items[i])
        for j in after[i]:
            waiting[j] -= 1
            if waiting[j] == 0 and not placed[j]:
                heapq.heappush(ready, (items[j].ts_us, j))
    return out


def call_flow(msgs: Sequence[Message]) -> list[FlowMessage]:
    """One call's messages: copies merged, in causal order."""
    return causal_order(merge_copies(msgs))
