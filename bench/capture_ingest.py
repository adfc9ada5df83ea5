"""How fast does `asterfleet capture run` store SIP messages, and how much
can the load generator offer?

The load generator: ``--senders`` processes, each with its own socket and
its own pool of pre-encoded HEP v3 packets of realistic calls (INVITE, 100,
180, 200, ACK, BYE, 200: unique Call-IDs per process). UDP goes out with
``sendmmsg`` (64 datagrams per system call), TCP as large ``sendall`` writes
of consecutive packets; both paced in 5 ms steps to ``--rate`` in total (0:
as fast as they can).

``--offer`` measures the generator alone, against a sink process that reads
and discards (UDP with ``recvmmsg``). Otherwise the collector runs as its
own process (SQLite in a temp dir, or a throwaway PostgreSQL cluster, with
``--durability on`` = PostgreSQL's defaults: fsync and synchronous commit
on, or ``off``), the senders push for ``--seconds``, and the figures come
from the collector's own Prometheus counters: messages stored per second,
loss (sent - stored), drops (the collector's and the kernel's) and the p99
batch write latency.

    .venv/bin/python bench/capture_ingest.py --offer --rate 0 --senders 2
    .venv/bin/python bench/capture_ingest.py --rate 150000 --seconds 20 \\
        --transport tcp --db postgresql --durability on
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from asterfleet.capture import mmsg  # noqa: E402
from asterfleet.capture.hep import HepPacket, encode_hep  # noqa: E402
from asterfleet.capture.pgsettings import CAPTURE_SETTINGS  # noqa: E402
from asterfleet.runtime.ports import free_port, free_port_both  # noqa: E402

CALL_FLOW = (
    ("INVITE", "1 INVITE", "10.0.0.1", "10.0.0.2"),
    ("100 Trying", "1 INVITE", "10.0.0.2", "10.0.0.1"),
    ("180 Ringing", "1 INVITE", "10.0.0.2", "10.0.0.1"),
    ("200 OK", "1 INVITE", "10.0.0.2", "10.0.0.1"),
    ("ACK", "1 ACK", "10.0.0.1", "10.0.0.2"),
    ("BYE", "2 BYE", "10.0.0.1", "10.0.0.2"),
    ("200 OK", "2 BYE", "10.0.0.2", "10.0.0.1"),
)
SDP = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)
#: Calls in each sender's pool (7 packets each); the pool repeats after that.
POOL_CALLS = 3000
TICK = 0.005
#: Where the throwaway PostgreSQL cluster lives (None: the temp dir, on disk).
PG_DIR: str | None = None
#: Settings the throwaway PostgreSQL cluster starts with (see --pg-settings).
PG_SETTINGS: dict[str, str] = {}


def sip_message(kind: str, cseq: str, call: int, call_id: str) -> bytes:
    method = kind if not kind[0].isdigit() else None
    start = f"{kind} sip:{1000 + call % 900}@10.0.0.2 SIP/2.0" if method else f"SIP/2.0 {kind}"
    body = SDP if kind in ("INVITE", "200 OK") and cseq.endswith("INVITE") else ""
    # The INVITE has no To tag yet: it opens the call (the partial indexes
    # on call openings get one entry a call, as with real traffic).
    to_tag = "" if kind == "INVITE" else f";tag={call:x}b"
    headers = (
        f"{start}\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{call:08x}{kind[:3]};rport\r\n"
        f'From: "caller {call}" <sip:{2000 + call % 5000}@10.0.0.1>;tag={call:x}a\r\n'
        f"To: <sip:{1000 + call % 900}@10.0.0.2>{to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq}\r\n"
        "Contact: <sip:caller@10.0.0.1:5060>\r\n"
        "Max-Forwards: 70\r\n"
        "User-Agent: asterfleet-bench\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return (headers + body).encode()


def packets(calls: int, transport: str) -> list[bytes]:
    now = int(time.time())
    out = []
    proto = 6 if transport == "tcp" else 17
    for call in range(calls):
        call_id = f"{uuid.uuid4().hex}@bench"
        for i, (kind, cseq, src, dst) in enumerate(CALL_FLOW):
            out.append(
                encode_hep(
                    HepPacket(
                        payload=sip_message(kind, cseq, call, call_id),
                        ip_proto=proto,
                        src_ip=src,
                        dst_ip=dst,
                        src_port=5060,
                        dst_port=5060,
                        ts_sec=now,
                        ts_usec=(call * 7 + i) % 1_000_000,
                        capture_id=1,
                        capture_host="bench",
                    )
                )
            )
    return out


# -- the load generator ----------------------------------------------------------


def sender(transport: str, port: int, rate: float, seconds: float) -> None:
    """One sending process (rate 0: flat out); prints what it sent as JSON."""
    pool = packets(POOL_CALLS, transport)
    if transport == "udp":
        # Datagrams of one size in a row: one segmentation-offload send each.
        pool.sort(key=len)
    n = len(pool)
    budget = int(rate * seconds) if rate else None

    def _fallback_send(start: int, count: int) -> int:
        for p in pool[start : start + count]:
            sock.send(p)
        return count

    if transport == "tcp":
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        blob = memoryview(b"".join(pool))
        offsets = [0]
        for p in pool:
            offsets.append(offsets[-1] + len(p))

        def send(start: int, count: int) -> int:
            end = start + count
            sock.sendall(blob[offsets[start] : offsets[end]])
            return count

    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(("127.0.0.1", port))
        if _gso_works(sock, pool[0]):
            send = _gso_sender(sock, pool)
        elif mmsg.available():
            send = mmsg.Sender(sock.fileno(), pool).send
        else:  # pragma: no cover - not Linux
            send = _fallback_send

    # The segmentation-offload probe sent one packet already.
    sent = 1 if transport == "udp" and send is not _fallback_send else 0
    pos = 0
    step = 2048
    cpu0 = time.process_time()
    started = time.monotonic()
    deadline = started + seconds
    while True:
        now = time.monotonic()
        if now >= deadline or (budget is not None and sent >= budget):
            break
        if rate:
            due = min(budget or 0, int((now - started) * rate) + 1)
            if due <= sent:
                time.sleep(TICK)
                continue
            want = due - sent
        else:
            want = step
        while want > 0:
            count = min(want, n - pos)
            done = send(pos, count)
            sent += done
            want -= done
            pos = (pos + done) % n
    elapsed = time.monotonic() - started
    sock.close()
    print(json.dumps({"sent": sent, "seconds": elapsed, "cpu_s": time.process_time() - cpu0}))


#: Linux UDP segmentation offload: one send, many datagrams of one size.
UDP_SEGMENT = 103
GSO_MAX = 64


def _gso_works(sock: socket.socket, packet: bytes) -> bool:
    try:
        sock.sendmsg([packet], [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("=H", len(packet)))])
    except OSError:
        return False
    return True


def _gso_sender(sock: socket.socket, pool: list[bytes]) -> Callable[[int, int], int]:
    """A send(start, count) that hands the kernel up to 64 same-size datagrams
    in one system call (UDP_SEGMENT)."""
    blob = memoryview(b"".join(pool))
    offsets = [0]
    for p in pool:
        offsets.append(offsets[-1] + len(p))
    # Where the run of same-size packets starting at i ends (at most GSO_MAX long).
    run_end = [0] * len(pool)
    for i in range(len(pool) - 1, -1, -1):
        same = i + 1 < len(pool) and len(pool[i + 1]) == len(pool[i])
        run_end[i] = min(run_end[i + 1], i + GSO_MAX) if same else i + 1
    cmsgs = {len(p): [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("=H", len(p)))] for p in pool}

    def send(start: int, count: int) -> int:
        stop = start + count
        i = start
        while i < stop:
            end = min(run_end[i], stop)
            try:
                sock.sendmsg([blob[offsets[i] : offsets[end]]], cmsgs[len(pool[i])])
            except (ConnectionRefusedError, BlockingIOError, InterruptedError):
                continue
            i = end
        return count

    return send


def sink(transport: str, port_file: str, seconds: float) -> None:
    """Reads and discards (the receiving end of ``--offer``); prints the count."""
    received = 0
    if transport == "udp":
        # Not read: a UDP sender never waits for its receiver unless the
        # receiver holds its buffers, and what the generator offers is the
        # question here (the kernel discards what does not fit).
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        sock.bind(("127.0.0.1", 0))
        Path(port_file).write_text(str(sock.getsockname()[1]))
        time.sleep(seconds)
    else:
        server = socket.create_server(("127.0.0.1", 0))
        Path(port_file).write_text(str(server.getsockname()[1]))
        server.settimeout(seconds)
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(server, selectors.EVENT_READ)
        buf = bytearray(1 << 20)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                if key.fileobj is server:
                    conn, _ = server.accept()
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj  # type: ignore[assignment]
                try:
                    got = conn.recv_into(buf)
                except BlockingIOError:
                    continue
                if not got:
                    sel.unregister(conn)
                    conn.close()
                received += got
    print(json.dumps({"received": received}))


def run_senders(
    transport: str, port: int, rate: float, seconds: float, senders: int
) -> dict[str, float]:
    argv = [sys.executable, __file__, "--send", transport, str(port), str(rate / senders)]
    procs = [
        subprocess.Popen([*argv, str(seconds)], stdout=subprocess.PIPE, text=True)
        for _ in range(senders)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"sender failed ({proc.returncode})")
        results.append(json.loads(out))
    return {
        "sent": sum(r["sent"] for r in results),
        "seconds": max(r["seconds"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
    }


# -- where the CPU goes ------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    # Its own time and that of its children that exited (autovacuum
    # workers come and go during a run).
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICK


def settings_name() -> str:
    """How the bench's PostgreSQL is set up: ``capture``, ``stock`` or the settings."""
    if PG_SETTINGS == CAPTURE_SETTINGS:
        return "capture"
    return ",".join(f"{k}={v}" for k, v in PG_SETTINGS.items()) or "stock"


def pg_role(pid: str) -> str:
    """What a PostgreSQL process does, from its title: ``backend`` (a
    client's connection: the writers' COPY), ``walwriter``, ``checkpointer``,
    ``autovacuum`` or ``other`` (the postmaster, with the time of children
    that exited, and the rest)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    if "127.0.0.1(" in title or "[local]" in title:
        return "backend"
    for role in ("walwriter", "checkpointer", "autovacuum"):
        if role in title:
            return role
    return "other"


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of a process and each of its descendants, by pid."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = stat
    out: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in cpu:
            out[str(pid)] = cpu[pid]
        todo += [child for child, parent in parents.items() if parent == pid]
    return out


def offer(transport: str, seconds: float, senders: int, rate: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        port_file = Path(tmp) / "port"
        sink_proc = subprocess.Popen(
            [sys.executable, __file__, "--sink", transport, str(port_file), str(seconds + 15)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("sink did not start")
            time.sleep(0.05)
        result = run_senders(transport, int(port_file.read_text()), rate, seconds, senders)
        sink_proc.kill()
        sink_proc.wait()
    return {
        "transport": transport,
        "senders": senders,
        "sent": result["sent"],
        "seconds": round(result["seconds"], 2),
        "offered_per_s": round(result["sent"] / result["seconds"]),
    }


# -- the collector under load ------------------------------------------------------


def _wal_lsn(url: str) -> int:
    """PostgreSQL's WAL position in bytes (what durability has to write)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def scrape(port: int) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def p99(metrics: dict[str, float]) -> float | None:
    prefix = "asterfleet_capture_batch_write_seconds_bucket"
    buckets = sorted(
        (float("inf") if m.group(1) == "+Inf" else float(m.group(1)), v)
        for k, v in metrics.items()
        if (m := re.match(prefix + r'\{le="([^"]+)"\}', k))
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    target = 0.99 * buckets[-1][1]
    return next(le for le, count in buckets if count >= target)


def total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(name) and "_created" not in k)


def run_one(
    db: str,
    durable: bool,
    transport: str,
    rate: float,
    seconds: float,
    senders: int,
    extra: list[str],
    workdir: Path,
) -> dict[str, object]:
    pg = None
    if db == "postgresql":
        from asterfleet.testing.postgres import PgSandbox

        pg = PgSandbox(Path(PG_DIR) if PG_DIR else None, durable=durable, settings=PG_SETTINGS)
        url = pg.start()
    else:
        url = str(workdir / f"bench-{transport}-{time.monotonic_ns()}.db")
    hep_port = free_port_both()
    metrics_port = free_port()
    log = open(workdir / f"collector-{db}-{transport}.log", "wb")  # noqa: SIM115
    collector = subprocess.Popen(
        [sys.executable, "-m", "asterfleet.cli.capture", "run",
         "--listen", f"udp:127.0.0.1:{hep_port},tcp:127.0.0.1:{hep_port}",
         "--db", url, "--metrics-listen", f"127.0.0.1:{metrics_port}", *extra],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(metrics_port)
                break
            except Exception:
                if time.monotonic() > deadline or collector.poll() is not None:
                    raise RuntimeError("collector did not start") from None
                time.sleep(0.1)
        pg_root = int((pg.data / "postmaster.pid").read_text().split()[0]) if pg else None
        cpu_before = {"collector": tree_cpu(collector.pid)}
        if pg_root is not None:
            cpu_before["postgresql"] = tree_cpu(pg_root)
        wal_before = _wal_lsn(url) if pg else 0
        started = time.monotonic()
        result = run_senders(transport, hep_port, rate, seconds, senders)
        sent = result["sent"]
        # Wait until every packet that arrived is accounted for and written.
        deadline = time.monotonic() + 300
        stable_since = finished = time.monotonic()
        last = -1.0
        while time.monotonic() < deadline:
            m = scrape(metrics_port)
            done = m["asterfleet_capture_stored_total"] + m["asterfleet_capture_dropped_total"]
            done += total(m, "asterfleet_capture_rejected_total")
            done += m.get("asterfleet_capture_udp_kernel_drops_total", 0)
            if done != last:
                last, stable_since = done, time.monotonic()
                finished = time.monotonic()
            if m["asterfleet_capture_queued"] == 0 and (
                done >= sent or time.monotonic() - stable_since > 3
            ):
                break
            time.sleep(0.05)
        m = scrape(metrics_port)
        stored = m["asterfleet_capture_stored_total"]
        wall = max(finished - started, 1e-9)
        # CPU µs per stored message, by part: what limits the rate on 2 cores.
        cpu_after = {"collector": tree_cpu(collector.pid)}
        if pg_root is not None:
            cpu_after["postgresql"] = tree_cpu(pg_root)
        per_msg: dict[str, float] = {}
        pg_parts: dict[str, float] = {}
        for part, after in cpu_after.items():
            before = cpu_before[part]
            # Totals, not per-process differences: a process that exited
            # left its time to its parent.
            used = sum(after.values()) - sum(before.values())
            if part == "collector":
                main = str(collector.pid)
                per_msg["receiver"] = after.get(main, 0.0) - before.get(main, 0.0)
                per_msg["writers"] = used - per_msg["receiver"]
            else:
                per_msg[part] = used
                for pid, t in after.items():
                    role = pg_role(pid)
                    pg_parts[role] = pg_parts.get(role, 0.0) + t - before.get(pid, 0.0)
        per_msg["senders"] = result["cpu_s"]
        cpu_us = {k: round(v / max(stored, 1) * 1e6, 2) for k, v in per_msg.items()}
        pg_us = {k: round(v / max(stored, 1) * 1e6, 2) for k, v in sorted(pg_parts.items())}
        wal_per_msg = round((_wal_lsn(url) - wal_before) / max(stored, 1)) if pg else None
        return {
            "db": db,
            "durability": ("on" if durable else "off") if db == "postgresql" else "-",
            "pg_settings": settings_name() if db == "postgresql" else "-",
            "transport": transport,
            "senders": senders,
            "rate_asked": rate,
            "sent": sent,
            "offered_per_s": round(sent / result["seconds"]),
            "received": m["asterfleet_capture_received_total"],
            "stored": stored,
            "dropped": m["asterfleet_capture_dropped_total"],
            "kernel_udp_drops": m.get("asterfleet_capture_udp_kernel_drops_total", 0),
            "rejected": total(m, "asterfleet_capture_rejected_total"),
            "loss": sent - stored,
            "loss_pct": round(100 * (sent - stored) / sent, 3) if sent else 0.0,
            "stored_per_s": round(stored / wall),
            "p99_batch_s": p99(m),
            "cpu_us_per_msg": cpu_us,
            "postgresql_us_per_msg": pg_us,
            "cpu_bound_per_s": round(2e6 / sum(cpu_us.values())) if stored else 0,
            "wal_bytes_per_msg": wal_per_msg,
        }
    finally:
        collector.terminate()
        try:
            collector.wait(60)
        except subprocess.TimeoutExpired:
            collector.kill()
        log.close()
        if pg is not None:
            pg.destroy()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        sender(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        sink(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50_000, help="messages/s in total (0: max)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=2, help="sending processes")
    parser.add_argument("--transport", action="append", choices=["tcp", "udp"])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--durability", action="append", choices=["on", "off"],
        help="PostgreSQL fsync + synchronous_commit (default: both, on first)",
    )  # fmt: skip
    parser.add_argument("--offer", action="store_true", help="measure the generator alone")
    parser.add_argument(
        "--collector-arg", action="append", default=[], help="extra `capture run` argument"
    )
    parser.add_argument(
        "--pg-dir",
        help="make the PostgreSQL cluster under this directory (e.g. /dev/shm: takes the "
        "disk out; fsync is then no protection, so report such runs as CPU-bound only)",
    )
    parser.add_argument(
        "--pg-settings", choices=["capture", "stock"], default="capture",
        help="PostgreSQL's settings: the capture store's (asterfleet.capture.pgsettings: fewer "
        "checkpoints, compressed full-page images; durability unchanged) or its stock defaults",
    )  # fmt: skip
    parser.add_argument(
        "--pg-set", action="append", default=[], metavar="NAME=VALUE",
        help="one more PostgreSQL setting (e.g. shared_buffers=1GB)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    global PG_DIR, PG_SETTINGS
    PG_DIR = args.pg_dir
    PG_SETTINGS = dict(CAPTURE_SETTINGS) if args.pg_settings == "capture" else {}
    for extra in args.pg_set:
        name, sep, value = extra.partition("=")
        if not sep:
            parser.error(f"--pg-set {extra!r}: give NAME=VALUE")
        PG_SETTINGS[name] = value
    results: list[dict[str, object]] = []
    transports = args.transport or ["tcp", "udp"]
    if args.offer:
        for transport in transports:
            result = offer(transport, args.seconds, args.senders, args.rate)
            results.append(result)
            if not args.json:
                print(
                    f"offer {transport}: {result['senders']} senders sent {result['sent']} "
                    f"in {result['seconds']}s = {result['offered_per_s']}/s",
                    flush=True,
                )
    else:
        with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
            for db in args.db or ["sqlite", "postgresql"]:
                modes = args.durability or ["on", "off"] if db == "postgresql" else ["on"]
                for mode in modes:
                    for transport in transports:
                        result = run_one(
                            db, mode == "on", transport, args.rate, args.seconds, args.senders,
                            args.collector_arg, Path(tmp),
                        )  # fmt: skip
                        results.append(result)
                        if not args.json:
                            print(
                                f"{db:10} durability={result['durability']:3} "
                                f"settings={result['pg_settings']} {transport}: "
                                f"offered {result['offered_per_s']}/s, sent {result['sent']}, "
                                f"stored {result['stored']:.0f} ({result['stored_per_s']}/s), "
                                f"loss {result['loss']:.0f} = {result['loss_pct']}% "
                                f"(dropped {result['dropped']:.0f}, kernel "
                                f"{result['kernel_udp_drops']:.0f}, rejected "
                                f"{result['rejected']:.0f}), p99 batch {result['p99_batch_s']}s, "
                                f"CPU µs/msg {result['cpu_us_per_msg']} "
                                f"(PostgreSQL's {result['postgresql_us_per_msg']}) → 2 cores bound "
                                f"{result['cpu_bound_per_s']}/s, WAL "
                                f"{result['wal_bytes_per_msg']} B/msg",
                                flush=True,
                            )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
