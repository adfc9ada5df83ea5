"""`asterfleet capture`: the HEP v3 capture server, search and PCAP export."""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer

from asterfleet.capture.listen import parse_listen
from asterfleet.cli.common import (
    ClusterOpt,
    JsonOption,
    emit,
    etcd_options,
    etcd_security,
    host_port,
    parsed_by,
    print_table,
    user_errors,
)
from asterfleet.errors import UsageError

if TYPE_CHECKING:
    from asterfleet.capture.search import MessageQuery
    from asterfleet.capture.store import Store

# The capture stack (SQLAlchemy, the collector) is imported inside each
# command: `capture search` answers within a few hundred milliseconds, start-up
# included, and `--help` loads none of it.

app = typer.Typer(
    help=(
        "Capture SIP: a HEP v3 server fed by Kamailio (siptrace) and Asterisk "
        "(res_hep), with search and PCAP export.\n\n"
        "Start it: `asterfleet capture run --listen udp:0.0.0.0:9060,tcp:0.0.0.0:9060 "
        "--db capture.db`. Find calls: `asterfleet capture search --from-user alice "
        "--since 1h`. Open one in Wireshark: `asterfleet capture export CALL-ID --pcap call.pcap`."
    ),
    no_args_is_help=True,
)

DbOption = typer.Option(
    "capture.db",
    "--db",
    envvar="ASTERFLEET_CAPTURE_DB",
    help="SQLite file path, or postgresql://USER[:PASS]@HOST:PORT/DB.",
)


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9161")
    return host.strip("[]"), int(port)


@app.command("run")
@etcd_options
def run_cmd(
    listen: str = typer.Option(
        "udp:0.0.0.0:9060,tcp:0.0.0.0:9060",
        "--listen",
        envvar="ASTERFLEET_CAPTURE_LISTEN",
        parser=parsed_by(parse_listen),
        help="Comma-separated udp:HOST:PORT, tcp:HOST:PORT and tls:HOST:PORT sockets to "
        "receive HEP on (tls: HEP over TLS, needs --tls-cert).",
    ),
    db: str = DbOption,
    auth_key: str | None = typer.Option(
        None,
        "--auth-key",
        envvar="ASTERFLEET_CAPTURE_AUTH_KEY",
        help="Accept only packets carrying this HEP auth key (others are counted, rejected).",
    ),
    retention: str | None = typer.Option(
        None, "--retention", help="Delete messages older than this (e.g. 7d, 12h)."
    ),
    max_size: str | None = typer.Option(
        None, "--max-size", help="Delete the oldest messages beyond this size (e.g. 10GB)."
    ),
    metrics_listen: str | None = typer.Option(
        None,
        "--metrics-listen",
        parser=host_port,
        envvar="ASTERFLEET_CAPTURE_METRICS_LISTEN",
        help="HOST:PORT serving Prometheus metrics at /metrics.",
    ),
    etcd: str | None = typer.Option(
        None,
        "--etcd",
        envvar="ASTERFLEET_ETCD",
        help="etcd endpoints (HOST:PORT,...): advertise this server under the cluster's "
        "capture key, under a lease.",
    ),
    cluster: str = ClusterOpt,
    advertise: str | None = typer.Option(
        None, "--advertise", help="Host name or IP senders should use (default: listen host)."
    ),
    retention_interval: str = typer.Option(
        "60s", "--retention-interval", help="How often retention runs."
    ),
    queue_size: int = typer.Option(
        200_000,
        "--queue-size",
        help="Messages held for the database; when full, TCP reading pauses and UDP is dropped.",
    ),
    batch_size: int = typer.Option(5000, "--batch-size", help="Messages per database write."),
    tcp_idle_timeout: str = typer.Option(
        "5m", "--tcp-idle-timeout", help="Close a TCP connection silent this long (e.g. 5m)."
    ),
    max_tcp_connections: int = typer.Option(
        1024,
        "--max-tcp-connections",
        help="Most TCP connections at once; a new one closes the least recently active.",
    ),
    max_write_rate: float | None = typer.Option(
        None,
        "--max-write-rate",
        help="Store at most this many messages a second (spares a shared database; "
        "TCP senders are slowed, UDP beyond the queue is dropped and counted).",
    ),
    udp_rcvbuf: str = typer.Option(
        "32M", "--udp-rcvbuf", help="Kernel receive buffer per UDP socket (e.g. 32M)."
    ),
    writers: int = typer.Option(
        4,
        "--writers",
        help="Writer processes: each parses and stores batches on its own database "
        "connection. Each waits for its commit to reach the disk, so more writers than "
        "cores keep the cores busy (SQLite always uses one).",
    ),
    tls_cert: str | None = typer.Option(
        None,
        "--tls-cert",
        envvar="ASTERFLEET_CAPTURE_TLS_CERT",
        help="PEM certificate chain for tls: listeners.",
    ),
    tls_key: str | None = typer.Option(
        None,
        "--tls-key",
        envvar="ASTERFLEET_CAPTURE_TLS_KEY",
        help="PEM private key for tls: listeners (when not in --tls-cert).",
    ),
) -> None:
    """Receive HEP v3 over UDP and TCP and store every SIP message.

    Malformed packets are counted (`asterfleet_capture_rejected_total{reason}`)
    and skipped. When the database is slow or down, messages wait in a bounded
    queue. Over TCP nothing is ever dropped: with the queue full the server
    stops reading and the senders slow down. UDP beyond the queue is dropped;
    every loss (and the kernel's own UDP drops) is counted in the metrics and
    logged once per interval as `capture_loss`. Stop with Ctrl-C or SIGTERM:
    queued messages are written first.
    """
    import asyncio

    from asterfleet.capture.collector import CollectorSettings, run
    from asterfleet.capture.store import parse_duration, parse_size

    with user_errors():
        if queue_size < 1 or batch_size < 1:
            raise UsageError("--queue-size and --batch-size must be at least 1")
        if not 1 <= writers <= 64:
            raise UsageError(f"--writers {writers}: give 1 to 64 writer processes")
        if max_tcp_connections < 1:
            raise UsageError(f"--max-tcp-connections {max_tcp_connections}: must be at least 1")
        if max_write_rate is not None and not 0 < max_write_rate < float("inf"):
            raise UsageError(
                f"--max-write-rate {max_write_rate}: give a positive number of messages a second"
            )
        settings = CollectorSettings(
            listen=parse_listen(listen),
            db_url=db,
            auth_key=auth_key,
            retention_s=parse_duration(retention) if retention else None,
            max_bytes=parse_size(max_size) if max_size else None,
            queue_rows=queue_size,
            batch_size=batch_size,
            retention_interval=parse_duration(retention_interval),
            tcp_idle_timeout=parse_duration(tcp_idle_timeout),
            tcp_max_connections=max_tcp_connections,
            max_write_rate=max_write_rate,
            udp_rcvbuf=parse_size(udp_rcvbuf),
            writers=writers,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        metrics = _host_port(metrics_listen, "--metrics-listen") if metrics_listen else None
        asyncio.run(
            run(
                settings,
                metrics_listen=metrics,
                etcd=(etcd, cluster) if etcd else None,
                advertise_host=advertise,
                etcd_security=etcd_security(),
            )
        )


P = ParamSpec("P")
R = TypeVar("R")


def one_shot(fn: Callable[P, R]) -> Callable[P, R]:
    """A command that answers once and exits: no cyclic garbage collection
    while it runs. Its passes over the modules being imported cost about a
    tenth of `capture search --call-id` (20-30 ms) and would free nothing.
    Collection is on again after it (a command run in-process, as in tests)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        collecting = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if collecting:
                gc.enable()

    return run


@app.command("search")
@one_shot
def search_cmd(
    db: str = DbOption,
    call_id: str | None = typer.Option(None, "--call-id", help="Exact Call-ID."),
    from_user: str | None = typer.Option(None, "--from-user", help="From user (prefix)."),
    to_user: str | None = typer.Option(None, "--to-user", help="To user (prefix)."),
    since: str | None = typer.Option(None, "--since", help="ISO time or age (15m, 2h, 1d)."),
    until: str | None = typer.Option(None, "--until", help="ISO time or age."),
    method: str | None = typer.Option(None, "--method", help="Request method, e.g. INVITE."),
    status: int | None = typer.Option(None, "--status", help="Response status, e.g. 503."),
    capture_host: str | None = typer.Option(
        None,
        "--capture-host",
        help="Capture host (the HEP sender: a balancer or an Asterisk box): "
        "its capture name or capture id.",
    ),
    status_class: str | None = typer.Option(
        None,
        "--status-class",
        help="Calls with an answer of this class: 2xx, 3xx, 4xx, 5xx, 6xx; none: unanswered.",
    ),
    text: str | None = typer.Option(
        None, "--text", help="Text anywhere in one of the call's messages (e.g. a header value)."
    ),
    options: bool = typer.Option(
        False, "--options", help="Also list OPTIONS probes (hidden otherwise)."
    ),
    mos_below: float | None = typer.Option(
        None,
        "--mos-below",
        help="Calls with a stream whose estimated MOS (from RTCP, 1.0-4.5) fell below this, "
        "e.g. 3.5.",
    ),
    min_duration: str | None = typer.Option(
        None, "--min-duration", help="Calls lasting at least this long: 90, 30s, 2m."
    ),
    max_duration: str | None = typer.Option(
        None, "--max-duration", help="Calls lasting at most this long (so far, if in progress)."
    ),
    node: str | None = typer.Option(
        None,
        "--node",
        help="Calls sent to or answered by this node (its id): each address it held, while "
        "it held it, from the fleet's address history in the console's database (--console-db).",
    ),
    balancer: str | None = typer.Option(
        None,
        "--balancer",
        help="Calls this balancer (its id) relayed or captured, resolved like --node.",
    ),
    console_db: str | None = typer.Option(
        None,
        "--console-db",
        envvar="ASTERFLEET_CONSOLE_DB",
        help="The console's database (its --db), where the fleet's address history lives; "
        "read only with --node or --balancer "
        "[default: ~/.local/state/asterfleet/console.db].",
    ),
    cluster: str = ClusterOpt,
    messages: bool = typer.Option(
        False,
        "--messages",
        help="List matching messages instead of calls: by Call-ID, users, time, method, "
        "status and capture host (the call filters refuse it).",
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many results."),
    cursor: str | None = typer.Option(
        None,
        "--cursor",
        help="Continue below this point (the previous page prints it): the next, older calls.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Find calls (or single messages) by Call-ID, users, time, method or status.

    Calls are listed by start, newest first, through the same paging search
    as the console's Calls page and `GET /api/v1/calls`. The balancers'
    OPTIONS probes are left out unless `--options` is given. MOS is a call's
    lowest estimated MOS of any RTCP report (`min_mos` in `--json`), at its
    codec's RTP clock: the figure `--mos-below` compares and the call page shows.
    """
    from asterfleet.capture.pager import (
        MAX_PAGE,
        STATUS_CLASSES,
        decode_cursor,
        encode_cursor,
        page_calls,
    )
    from asterfleet.capture.rtcp import mos_threshold
    from asterfleet.capture.search import MessageQuery, parse_time, search_messages

    with user_errors():
        if method and status is not None:
            raise UsageError("give --method or --status, not both")
        if limit < 1 or (limit > MAX_PAGE and not messages):
            raise UsageError(f"--limit {limit}: give 1 to {MAX_PAGE} calls")
        if status_class is not None and status_class.lower() not in STATUS_CLASSES:
            raise UsageError(
                f"--status-class {status_class!r}: give one of {', '.join(STATUS_CLASSES)}"
            )
        now_us = int(time.time() * 1_000_000)
        from asterfleet.capture.search import duration_us

        query = MessageQuery(
            call_id=call_id,
            from_user=from_user,
            to_user=to_user,
            since_us=parse_time(since, now_us) if since else None,
            until_us=parse_time(until, now_us) if until else None,
            method=method,
            status=status,
            capture_host=capture_host,
            limit=limit,
            status_class=status_class.lower() if status_class else None,
            text=text or None,
            options=options,
            mos_below=mos_threshold(mos_below, "--mos-below"),
            min_duration_us=duration_us(min_duration, "--min-duration"),
            max_duration_us=duration_us(max_duration, "--max-duration"),
        )
        if messages:
            given = {
                "--status-class": status_class, "--text": text, "--mos-below": mos_below,
                "--min-duration": min_duration, "--max-duration": max_duration,
                "--node": node, "--balancer": balancer, "--cursor": cursor,
            }  # fmt: skip
            call_only = [name for name, value in given.items() if value not in (None, "")]
            if call_only:
                raise UsageError(
                    f"{' and '.join(call_only)} find{'s' if len(call_only) == 1 else ''} calls, "
                    "not single messages: leave out --messages"
                )
        if node is not None or balancer is not None:
            query = _with_parties(query, console_db, cluster, node, balancer)
        store = _open(db)
        try:
            if messages:
                found = search_messages(store, query)
                data: list[dict[str, Any]] = [
                    {
                        "id": m.id,
                        "ts_us": m.ts_us,
                        "src": m.src,
                        "dst": m.dst,
                        "transport": m.transport,
                        "call_id": m.call_id,
                        "label": m.label,
                        "cseq": m.cseq,
                        "from_user": m.from_user,
                        "to_user": m.to_user,
                        "user_agent": m.user_agent,
                        "capture_host": m.capture_host,
                        "capture_id": m.capture_id,
                    }
                    for m in found
                ]
                emit(
                    as_json,
                    data,
                    lambda: print_table(
                        f"{len(data)} messages",
                        ["time (UTC)", "src", "dst", "message", "cseq", "call-id"],
                        [
                            (_ts(d["ts_us"]), d["src"], d["dst"], d["label"], d["cseq"],
                             d["call_id"])
                            for d in data
                        ],
                    ),
                )  # fmt: skip
                return
            page = page_calls(store, query, limit, decode_cursor(cursor or ""))
            lowest = store.lowest_mos([c.call_id for c in page.calls])
            calls = [{**c.as_dict(), "min_mos": lowest.get(c.call_id)} for c in page.calls]
            emit(
                as_json,
                calls,
                lambda: print_table(
                    f"{len(calls)} calls",
                    ["start (UTC)", "duration", "from", "to", "status", "node", "msgs",
                     "MOS", "call-id"],
                    [
                        (_ts(c["start_us"]), f"{c['duration_s']:.3f}s", c["from_user"],
                         c["to_user"], c["final_status"] or "-", c["node"] or "-",
                         c["messages"], "-" if c["min_mos"] is None else f"{c['min_mos']:.2f}",
                         c["call_id"])
                        for c in calls
                    ],
                ),
            )  # fmt: skip
            if page.next_cursor is not None:
                # On stderr: the JSON on stdout stays a list of calls.
                more = "the search stopped early; " if page.truncated else ""
                typer.echo(
                    f"{more}older calls: add --cursor {encode_cursor(page.next_cursor)}",
                    err=True,
                )
        finally:
            store.close()


@app.command("export")
def export_cmd(
    call_id: str = typer.Argument(..., help="The Call-ID of the call to export."),
    pcap: Path = typer.Option(..., "--pcap", help="Write the call's messages to this PCAP file."),
    db: str = DbOption,
) -> None:
    """Write one call's messages as a PCAP file that Wireshark and tshark open."""
    from asterfleet.capture.ladder import build_ladder
    from asterfleet.capture.pcap import build_pcap
    from asterfleet.capture.search import call_messages

    with user_errors():
        store = _open(db)
        try:
            msgs = call_messages(store, call_id)
        finally:
            store.close()
        if not msgs:
            raise UsageError(
                f"no messages with Call-ID {call_id!r}: find it with `asterfleet capture search`"
            )
        try:
            pcap.write_bytes(build_pcap(msgs))
        except OSError as exc:
            raise UsageError(f"cannot write {pcap}: {exc.strerror}") from None
        hosts = build_ladder(msgs).hosts
        typer.echo(f"wrote {len(msgs)} messages between {len(hosts)} hosts to {pcap}")


def _open(db: str) -> Store:
    from asterfleet.capture.store import Store

    if "://" not in db and not Path(db).exists():
        raise UsageError(f"capture database {db!r} does not exist: check --db")
    return Store(db, create=False)


def _with_parties(
    query: MessageQuery, console_db: str | None, cluster: str, node: str | None,
    balancer: str | None,
) -> MessageQuery:  # fmt: skip
    """``query`` with the node and balancer names resolved to every address
    and capture id they held: the console's address history (read only)."""
    import dataclasses

    import sqlalchemy as sa

    from asterfleet.console.addressbook import party
    from asterfleet.db import default_url, open_database
    from asterfleet.fleet.directory import BALANCER, NODE
    from asterfleet.storage import normalise_url

    url = normalise_url(console_db or default_url(legacy=False), "--console-db")
    path = url.removeprefix("sqlite:///")
    if url.startswith("sqlite:///") and not Path(path).is_file():
        raise UsageError(
            f"console database {path!r} does not exist: --node and --balancer read the fleet's "
            "address history there; give the console's --db as --console-db"
        )
    database = open_database(url, apply_migrations=False)
    try:
        return dataclasses.replace(
            query,
            node=party(database, cluster, NODE, node.strip()) if node is not None else None,
            balancer=party(database, cluster, BALANCER, balancer.strip())
            if balancer is not None
            else None,
        )
    except sa.exc.SQLAlchemyError as exc:
        raise UsageError(
            f"cannot read the fleet's address history in {console_db or url}: "
            f"{str(exc).splitlines()[0]} (is it the console's --db?)"
        ) from None
    finally:
        database.close()


def _ts(ts_us: int) -> str:
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_us / 1e6)) + f".{ts_us % 1_000_000:06d}"
    )


if __name__ == "__main__":
    app()
