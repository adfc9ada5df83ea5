"""What does securing the lab's etcd cost `asterfleet lab up`?

Starts the lab's etcd the way `lab up` does (`Stack.start_etcd`), alternately
plain (no TLS, no auth) and secured (a local CA and a certificate per user,
client-certificate TLS, `etcd secure`'s roles, auth on), ROUNDS times each,
and prints the median and spread of both and their difference. The
interpreter has imported the etcd client first, as `lab up` has.

    .venv/bin/python bench/lab_etcd.py --rounds 7
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import asterfleet.etcd_client  # noqa: E402,F401  (lab up has it loaded already)
from asterfleet.lab.stack import Stack, StackOptions  # noqa: E402


def once(secure: bool) -> float:
    work = Path(tempfile.mkdtemp(prefix="af-bench-lab-etcd-"))
    stack = Stack(work, StackOptions(cluster="lab", secure_etcd=secure))
    try:
        started = time.perf_counter()
        stack.start_etcd()
        return time.perf_counter() - started
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    once(True)  # warm up: first use of the TLS and crypto libraries
    for _ in range(args.rounds):
        for secure in (False, True):
            times[secure].append(once(secure))
    plain, secured = (statistics.median(times[k]) for k in (False, True))
    print("| etcd for lab up | median | min | max |")
    print("|---|---|---|---|")
    for label, key in (("plain", False), ("TLS + auth", True)):
        values = times[key]
        print(
            f"| {label} | {statistics.median(values):.2f} s | {min(values):.2f} s "
            f"| {max(values):.2f} s |"
        )
    print(f"\nsecuring adds {secured - plain:+.2f} s (median of {args.rounds} rounds each)")


if __name__ == "__main__":
    main()
