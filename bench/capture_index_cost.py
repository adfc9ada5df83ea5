"""What each index of ``sip_messages`` costs PostgreSQL per stored message.

A throwaway PostgreSQL cluster (``--durability on``: its defaults) gets
the capture schema; then, for each variant (no index at all, each index
alone, all of them), the table is emptied and ``--messages`` rows of the
ingest bench's calls are stored the way the collector stores them (binary
COPY, ``--batch`` rows per transaction). Reported per message: the CPU time
of the PostgreSQL backend (from /proc), the wall time, and the WAL bytes.

    .venv/bin/python bench/capture_index_cost.py --messages 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from capture_ingest import packets  # noqa: E402

from asterfleet.capture import _hepfast  # noqa: E402
from asterfleet.capture.store import (  # noqa: E402
    _PG_INDEXES,
    _PG_SEARCH_INDEXES,
    COLUMNS,
    COPY_SIGNATURE,
    COPY_TRAILER,
    Store,
)
from asterfleet.testing.postgres import PgSandbox  # noqa: E402

INDEXES = {
    sql.split("EXISTS ", 1)[1].split(" ", 1)[0]: sql for sql in (*_PG_INDEXES, *_PG_SEARCH_INDEXES)
}


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks


def run(
    url: str, variant: str, wanted: list[str], batches: list[bytes], rows: int
) -> dict[str, object]:
    with psycopg.connect(url, autocommit=True) as conn:
        for name in INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.execute("TRUNCATE sip_messages")
        for name in wanted:
            conn.execute(INDEXES[name])
        conn.execute("CHECKPOINT")
    with psycopg.connect(url) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        lsn0 = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]  # type: ignore[index]
        conn.commit()
        cpu0, t0 = backend_cpu(pid), time.perf_counter()
        sql = f"COPY sip_messages ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        for data in batches:
            with conn.cursor() as cur, cur.copy(sql) as copy:
                copy.write(COPY_SIGNATURE)
                copy.write(data)
                copy.write(COPY_TRAILER)
            conn.commit()
        wall, cpu = time.perf_counter() - t0, backend_cpu(pid) - cpu0
        lsn1 = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]  # type: ignore[index]
    return {
        "variant": variant,
        "pg_cpu_us_per_msg": round(cpu / rows * 1e6, 2),
        "wall_us_per_msg": round(wall / rows * 1e6, 2),
        "wal_bytes_per_msg": round((int(lsn1) - int(lsn0)) / rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--durability", choices=["on", "off"], default="on")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pool = packets(args.messages // 7 + 1, "tcp")[: args.messages]
    now = int(time.time() * 1_000_000)
    batches = []
    for i in range(0, len(pool), args.batch):
        copy, _, _, _, left, _ = _hepfast.parse_packets(pool[i : i + args.batch], None, now, True)
        assert not left
        batches.append(copy)
    pg = PgSandbox(durable=args.durability == "on")
    try:
        url = pg.start()
        Store(url).close()  # the schema
        variants = [("none", [])] + [(name, [name]) for name in INDEXES] + [("all", list(INDEXES))]
        results = []
        for variant, wanted in variants:
            result = run(url, variant, wanted, batches, len(pool))
            results.append(result)
            if not args.json:
                print(
                    f"{variant:28} PostgreSQL CPU {result['pg_cpu_us_per_msg']:6.2f} µs/msg, "
                    f"wall {result['wall_us_per_msg']:6.2f} µs/msg, "
                    f"WAL {result['wal_bytes_per_msg']:5} B/msg",
                    flush=True,
                )
        if args.json:
            print(json.dumps(results, indent=2))
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
