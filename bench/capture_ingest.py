"""How fast does `asterfleet capture run` store SIP messages?

Starts the collector as its own process (SQLite in a temp dir, or a
throwaway PostgreSQL cluster), then a separate sender process that pushes
pre-encoded HEP v3 packets of realistic calls (INVITE, 100, 180, 200, ACK,
BYE, 200) at a fixed rate over UDP or TCP for N seconds. Reports, from the
collector's own Prometheus counters: messages stored per second, loss
(sent - stored), drops and rejects, and the p99 batch write latency.

    .venv/bin/python bench/capture_ingest.py --rate 50000 --seconds 10 \
        --transport tcp --db sqlite --db postgresql
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from asterfleet.capture.hep import HepPacket, encode_hep  # noqa: E402
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


def sip_message(kind: str, cseq: str, call: int, call_id: str) -> bytes:
    method = kind if not kind[0].isdigit() else None
    start = f"{kind} sip:{1000 + call % 900}@10.0.0.2 SIP/2.0" if method else f"SIP/2.0 {kind}"
    body = SDP if kind in ("INVITE", "200 OK") and cseq.endswith("INVITE") else ""
    headers = (
        f"{start}\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{call:08x}{kind[:3]};rport\r\n"
        f'From: "caller {call}" <sip:{2000 + call % 5000}@10.0.0.1>;tag={call:x}a\r\n'
        f"To: <sip:{1000 + call % 900}@10.0.0.2>;tag={call:x}b\r\n"
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


def sender(transport: str, port: int, rate: int, seconds: float) -> None:
    """The separate sending process: prints the number of packets sent."""
    pool = packets(3000, transport)
    total = int(rate * seconds)
    tick = 0.005
    sent = 0
    started = time.monotonic()
    if transport == "tcp":
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    n = len(pool)
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        if due > sent:
            chunk = [pool[i % n] for i in range(sent, due)]
            if transport == "tcp":
                sock.sendall(b"".join(chunk))
            else:
                for pkt in chunk:
                    sock.sendto(pkt, ("127.0.0.1", port))
            sent = due
        else:
            time.sleep(tick)
    elapsed = time.monotonic() - started
    sock.close()
    print(json.dumps({"sent": sent, "seconds": elapsed}))


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


def run_one(db: str, transport: str, rate: int, seconds: float, workdir: Path) -> dict[str, object]:
    pg = None
    if db == "postgresql":
        from asterfleet.testing.postgres import PgSandbox

        pg = PgSandbox()
        url = pg.start()
    else:
        url = str(workdir / f"bench-{transport}.db")
    hep_port = free_port_both()
    metrics_port = free_port()
    log = open(workdir / f"collector-{db}-{transport}.log", "wb")  # noqa: SIM115
    collector = subprocess.Popen(
        [sys.executable, "-m", "asterfleet.cli.capture", "run",
         "--listen", f"udp:127.0.0.1:{hep_port},tcp:127.0.0.1:{hep_port}",
         "--db", url, "--metrics-listen", f"127.0.0.1:{metrics_port}"],
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
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, __file__, "--send", transport, str(hep_port), str(rate), str(seconds)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        sent = json.loads(out.stdout)["sent"]
        send_seconds = json.loads(out.stdout)["seconds"]
        # Wait until every packet that arrived is accounted for and written.
        deadline = time.monotonic() + 120
        stable_since = time.monotonic()
        last = -1.0
        while time.monotonic() < deadline:
            m = scrape(metrics_port)
            done = m["asterfleet_capture_stored_total"] + m["asterfleet_capture_dropped_total"]
            done += total(m, "asterfleet_capture_rejected_total")
            if done != last:
                last, stable_since = done, time.monotonic()
                finished = time.monotonic()
            if m["asterfleet_capture_queued"] == 0 and (
                done >= sent or time.monotonic() - stable_since > 2
            ):
                break
            time.sleep(0.05)
        m = scrape(metrics_port)
        stored = m["asterfleet_capture_stored_total"]
        wall = finished - started
        return {
            "db": db,
            "transport": transport,
            "rate_asked": rate,
            "sent": sent,
            "send_seconds": round(send_seconds, 2),
            "received": m["asterfleet_capture_received_total"],
            "stored": stored,
            "dropped": m["asterfleet_capture_dropped_total"],
            "rejected": total(m, "asterfleet_capture_rejected_total"),
            "loss": sent - stored,
            "stored_per_s": round(stored / wall),
            "p99_batch_s": p99(m),
        }
    finally:
        collector.terminate()
        try:
            collector.wait(30)
        except subprocess.TimeoutExpired:
            collector.kill()
        log.close()
        if pg is not None:
            pg.destroy()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        sender(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=50_000, help="messages per second to send")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--transport", action="append", choices=["tcp", "udp"])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        for db in args.db or ["sqlite", "postgresql"]:
            for transport in args.transport or ["tcp", "udp"]:
                result = run_one(db, transport, args.rate, args.seconds, Path(tmp))
                results.append(result)
                if not args.json:
                    print(
                        f"{db:10} {transport}: asked {args.rate}/s, sent {result['sent']} "
                        f"in {result['send_seconds']}s, stored {result['stored']:.0f} "
                        f"({result['stored_per_s']}/s), loss {result['loss']:.0f} "
                        f"(dropped {result['dropped']:.0f}, rejected {result['rejected']:.0f}), "
                        f"p99 batch {result['p99_batch_s']}s",
                        flush=True,
                    )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
