"""Image factory benchmarks.

1. Overhead: the same small Dockerfile (FROM scratch + static busybox) built
   and pushed with plain `buildah bud` + `buildah push`, and through the
   factory (queue, claim, git clone, build, push, bookkeeping), several runs
   each; reports the median wall times and the overhead ratio
   (target: factory <= 1.05 x plain).
2. Token endpoint throughput: tokens/s from `/token` served by uvicorn in a
   separate process, for the flows registry clients use (target >= 2,000/s).

Everything runs on loopback: docker-registry and the token server on free
ports in a temporary directory, removed afterwards.

    .venv/bin/python bench/factory.py [--runs 5] [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from http_load import Load, get_request, measure, post_form

from asterfleet.auth import add_user, create_token
from asterfleet.factory import queue
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.schema import metadata as factory_tables
from asterfleet.factory.store import add_knot
from asterfleet.factory.worker import Worker, WorkerSettings
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from asterfleet.testing.registry import RegistryLab, registry_lab

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY motd /etc/motd
CMD ["/bin/cat", "/etc/motd"]
"""


def make_repo(path: Path) -> None:
    path.mkdir(parents=True)
    shutil.copy(require_binary("busybox"), path / "busybox")
    (path / "motd").write_text("bench\n")
    (path / "Dockerfile").write_text(DOCKERFILE)
    git = ["git", "-C", str(path), "-c", "user.email=b@example.invalid", "-c", "user.name=b"]
    subprocess.run([*git, "init", "-q", "--initial-branch=main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)


def plain_runs(lab: RegistryLab, work: Path, repo: Path, runs: int) -> list[float]:
    base = [
        "buildah",
        "--root",
        str(work / "plain-root"),
        "--runroot",
        str(work / "plain-run"),
        "--storage-driver",
        "vfs",
    ]
    auth = work / "auth.json"
    secret = create_token(lab.db, "bench", "plain", ("pull", "push")).token
    subprocess.run(
        [
            *base,
            "login",
            "--authfile",
            str(auth),
            "--tls-verify=false",
            "-u",
            "bench",
            "--password-stdin",
            lab.registry_host,
        ],
        input=secret,
        text=True,
        check=True,
        capture_output=True,
    )
    times = []
    for i in range(runs):
        start = time.perf_counter()
        image = f"localhost/plain:{i}"
        subprocess.run(
            [*base, "bud", "--isolation", "chroot", "-t", image, str(repo)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *base,
                "push",
                "--authfile",
                str(auth),
                "--tls-verify=false",
                image,
                f"docker://{lab.registry_host}/bench/plain:{i}",
            ],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
        subprocess.run([*base, "rmi", "-f", image], capture_output=True, check=False)
    return times


def factory_runs(lab: RegistryLab, work: Path, repo: Path, runs: int) -> list[float]:
    add_knot(
        lab.engine,
        validate_knot(
            {
                "name": "bench",
                "git_url": str(repo),
                "repository": "bench/factory",
                "owners": ["bench"],
            }
        ),
    )
    worker = Worker(
        lab.engine,
        identity=lab.db,
        settings=WorkerSettings(
            registry=lab.registry_host,
            tls_verify=False,
            worker_id="bench",
            workdir=work,
            buildah_root=work / "factory-root",
            buildah_runroot=work / "factory-run",
        ),
    )
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        queue.enqueue(lab.engine, "bench", "refs/heads/main", None, "bench")
        [build] = worker.run_until_idle()
        times.append(time.perf_counter() - start)
        if build.state != "passed":
            raise SystemExit(f"factory build failed: {build.reason}")
    return times


def token_throughput(
    lab: RegistryLab,
    work: Path,
    seconds: float,
    workers: int,
    clients: int,
    connections: int,
    depth: int,
) -> dict[str, float]:
    """Tokens/s from `asterfleet registry serve --workers N` in its own
    processes, loaded by `clients` processes of the raw pipelined client."""
    port = free_port()
    db = f"sqlite:///{lab.directory / 'factory.db'}"
    server = ManagedProcess(
        "token-server",
        [
            sys.executable,
            "-c",
            "from asterfleet.cli.registry import app; app()",
            "serve",
            "--config-dir",
            str(lab.settings.directory),
            "--db",
            db,
            "--console-db",
            str(lab.directory / "console.db"),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--reconcile-interval",
            "100000",
        ],
        work / "token-server.log",
    ).start()
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
            timeout=30,
            what="token server",
        )
        host = f"127.0.0.1:{port}"
        svc = lab.settings.service
        scope = "repository:bench/app:pull,push"
        pat = create_token(lab.db, "bench", "tp", ("pull", "push")).token
        pat_auth = {"Authorization": "Basic " + base64.b64encode(f"bench:{pat}".encode()).decode()}
        pw_auth = {"Authorization": "Basic " + base64.b64encode(b"bench:bench-password").decode()}
        refresh = httpx.get(
            f"http://{host}/token",
            params={"service": svc, "offline_token": "true"},
            headers=pw_auth,
        ).json()["refresh_token"]
        params = {"service": svc, "scope": scope}
        flows = {
            "baseline: GET /healthz (no token, HTTP stack only)": get_request(
                host, "/healthz", {}, {}
            ),
            "GET basic + access token": get_request(host, "/token", params, pat_auth),
            "GET basic + password (cached argon2)": get_request(host, "/token", params, pw_auth),
            "POST refresh_token grant": post_form(
                host,
                "/token",
                {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh,
                    "service": svc,
                    "client_id": "bench",
                    "scope": scope,
                },
            ),
            "GET anonymous": get_request(
                host, "/token", {"service": svc, "scope": "repository:x/y:pull"}, {}
            ),
        }
        rates = {}
        for name, request in flows.items():
            load = Load("127.0.0.1", port, request, seconds, connections, depth)
            rate, failed = measure(load, clients)
            if failed:
                print(f"   ({failed} failed requests in {name})")
            rates[name] = rate
        return rates
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2, help="token server processes")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=8, help="per client process")
    parser.add_argument("--depth", type=int, default=8, help="pipelined requests per connection")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="af-bench-"))
    result: dict[str, object] = {}
    try:
        with registry_lab(work / "lab", reconcile_interval=100000) as lab:
            factory_tables.create_all(lab.engine)  # the factory shares the lab's store
            add_user(lab.db, "bench", "bench-password")
            if not args.skip_build:
                repo = work / "repo"
                make_repo(repo)
                plain = plain_runs(lab, work, repo, args.runs)
                factory = factory_runs(lab, work, repo, args.runs)
                p, f = statistics.median(plain), statistics.median(factory)
                result["build"] = {
                    "plain_median_s": round(p, 3),
                    "factory_median_s": round(f, 3),
                    "overhead_ratio": round(f / p, 3),
                    "plain_runs_s": [round(t, 3) for t in plain],
                    "factory_runs_s": [round(t, 3) for t in factory],
                }
                print(
                    f"build+push: plain buildah median {p:.3f}s, factory median {f:.3f}s, "
                    f"overhead {100 * (f / p - 1):+.1f}% (target <= +5%)"
                )
            rates = token_throughput(
                lab,
                work,
                args.seconds,
                args.workers,
                args.clients,
                args.connections,
                args.depth,
            )
            result["tokens_per_s"] = {k: round(v) for k, v in rates.items()}
            for name, rate in rates.items():
                print(f"tokens/s {name}: {rate:,.0f} (target >= 2,000)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
