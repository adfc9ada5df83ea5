"""The fleet on an etcd with client-certificate TLS and authentication on.

`asterfleet etcd secure` gives each part its own role; the node agent, the
balancer and the operator then work exactly as on an open etcd, while a node
credential cannot touch operator intent or another cluster, and a
certificate from the wrong CA gets one line, not a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asterfleet.cli.etcd import app as etcd_app
from asterfleet.errors import EtcdAccessDenied
from asterfleet.etcd_client import Etcd, EtcdSecurity
from asterfleet.etcdtools.cluster import EtcdClient
from asterfleet.etcdtools.server import EtcdServer, ServerTls, start_cluster, stop_all
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.stack import Stack, StackOptions
from asterfleet.runtime.process import wait_for
from tests.integration.tls_certs import Pair, TestCa

pytestmark = pytest.mark.integration


def asterfleet(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = TestCa(directory / "ca")
        self.server = self.ca.issue("etcd-server", server=True)
        self.root = self.ca.issue("root")
        self.node = self.ca.issue("t-node")
        self.balancer = self.ca.issue("t-balancer")
        self.laptop = self.ca.issue("ops-laptop")  # logs in with a user and password
        self.rogue = TestCa(directory / "rogue", "rogue CA").issue("t-operator")

    def args(self, pair: Pair) -> tuple[str, ...]:
        return (
            "--etcd-cacert",
            str(self.ca.path),
            "--etcd-cert",
            str(pair.cert),
            "--etcd-key",
            str(pair.key),
        )

    def security(self, pair: Pair) -> EtcdSecurity:
        return EtcdSecurity(cacert=self.ca.path, cert=pair.cert, key=pair.key)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Stack, Pki, Path]]:
    pki = Pki(tmp_path / "pki")
    etcd = EtcdServer(
        tmp_path / "etcd",
        tls=ServerTls(pki.ca.path, pki.server.cert, pki.server.key, pki.root.cert, pki.root.key),
    )
    stack = Stack(tmp_path / "stack", StackOptions(cluster="t"))
    stack.etcd, stack.etcd_cluster = etcd, [etcd]
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    try:
        etcd.start().wait_healthy()
        yield stack, pki, secrets_dir
    except BaseException:
        for log in sorted(tmp_path.rglob("*.log")):
            print(
                f"==== {log} ====\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            )
        raise
    finally:
        stack.stop()


# About 20 command-line runs, each a fresh interpreter: minutes on a busy
# two-core machine.
@pytest.mark.timeout(900)
def test_the_fleet_works_with_tls_and_roles_and_nothing_more(
    secured: tuple[Stack, Pki, Path],
) -> None:
    stack, pki, secrets_dir = secured
    endpoint = stack.etcd_endpoint
    made = asterfleet(
        "etcd", "secure", "--etcd", endpoint, "--cluster", "t", "--out", secrets_dir,
        *pki.args(pki.root), "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    assert report["auth_enabled"] is True
    assert "t-operator" in report["users_created"]
    password_file = secrets_dir / "t-operator.password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    # A second cluster on the same etcd; auth is on now, so this runs as
    # root (the certificate's common name).
    again = asterfleet(
        "etcd", "secure", "--etcd", endpoint, "--cluster", "u", "--out", secrets_dir,
        *pki.args(pki.root),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr

    # The fleet as before: a node registers, the balancer routes to it.
    stack.start_kamailio()
    stack.start_balancer(extra=pki.args(pki.balancer))
    backend = stack.add_node("ast1", extra=pki.args(pki.node))
    stack.wait_routable(backend, timeout=60)

    # The operator drains it with a user and password (never on argv).
    operator_env = {"ASTERFLEET_ETCD_PASSWORD": password_file.read_text().strip()}
    drained = asterfleet(
        "fleet", "drain", "ast1", "--etcd", endpoint, "--cluster", "t",
        *pki.args(pki.laptop), "--etcd-user", "t-operator", env=operator_env,
    )  # fmt: skip
    assert drained.returncode == 0, drained.stderr
    wait_for(
        lambda: stack.dispatcher_by_uri()[backend.sip_uri].flags.startswith("D"),
        30,
        what="the drained node disabled in Kamailio",
    )

    # A node credential may not undrain (admin/) nor touch another cluster.
    refused = asterfleet(
        "fleet", "undrain", "ast1", "--etcd", endpoint, "--cluster", "t", *pki.args(pki.node)
    )  # fmt: skip
    assert refused.returncode == 1
    assert "permission denied" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    async def as_node() -> list[str]:
        denied: list[str] = []
        async with Etcd(endpoint, security=pki.security(pki.node)) as etcd:
            for key in (
                Keyspace("t").admin_of("ast1"),
                Keyspace("u").node("ast9"),
                Keyspace("t").balancer("lb1"),
            ):
                try:
                    await etcd.put(key, b"{}")
                except EtcdAccessDenied:
                    denied.append(key)
            # Its own prefix stays writable.
            await etcd.put(Keyspace("t").node("probe-only"), b"{}")
            await etcd.delete(Keyspace("t").node("probe-only"))
        return denied

    assert asyncio.run(as_node()) == [
        "/asterfleet/t/admin/ast1",
        "/asterfleet/u/nodes/ast9",
        "/asterfleet/t/balancers/lb1",
    ]
    # The node is still drained: nothing the node credential tried got through.
    listing = asterfleet(
        "fleet", "show", "ast1", "--json", "--etcd", endpoint, "--cluster", "t",
        *pki.args(pki.laptop), "--etcd-user", "t-operator", env=operator_env,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["state"] in ("draining", "drained")

    # A wrong password, and a certificate from another CA: one line each.
    wrong = asterfleet(
        "fleet", "ls", "--etcd", endpoint, "--cluster", "t", *pki.args(pki.laptop),
        "--etcd-user", "t-operator", env={"ASTERFLEET_ETCD_PASSWORD": "not-it"},
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "authentication failed" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    rogue = asterfleet(
        "fleet", "ls", "--etcd", endpoint, "--cluster", "t", *pki.args(pki.rogue)
    )  # fmt: skip
    assert rogue.returncode == 1
    assert "Traceback" not in rogue.stderr
    assert len(rogue.stderr.strip().splitlines()) == 1
    assert "TLS" in rogue.stderr, rogue.stderr
    # A password on argv is not an option at all.
    argv_password = asterfleet("fleet", "ls", "--etcd-password", "x")
    assert argv_password.returncode == 2


def test_the_member_tools_speak_tls_and_auth(tmp_path: Path) -> None:
    """`etcd doctor`, `rejoin` and `discovery` on a 3-member etcd with
    client-certificate TLS and authentication on, as root with a password
    (membership changes need root); without the TLS options, one line."""
    pki = Pki(tmp_path / "pki")
    tls = ServerTls(pki.ca.path, pki.server.cert, pki.server.key, pki.root.cert, pki.root.key)
    cluster = start_cluster(tmp_path / "c", 3, tls=tls, extra_args=["--enable-v2=true"])
    runner = CliRunner()
    try:
        m0 = cluster[0]
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        made = runner.invoke(
            etcd_app,
            ["secure", "--etcd", m0.endpoint, "--cluster", "t", "--out", str(secrets_dir),
             *pki.args(pki.root)],
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        password = (secrets_dir / "root.password").read_text().strip()
        as_root = [*pki.args(pki.root), "--etcd-user", "root"]
        env = {"ASTERFLEET_ETCD_PASSWORD": password}
        root = EtcdSecurity(pki.ca.path, pki.root.cert, pki.root.key, "root", password)

        def doctor(*extra: str) -> tuple[int, dict[str, object]]:
            done = runner.invoke(
                etcd_app, ["doctor", "--endpoints", m0.endpoint, "--json", *extra], env=env
            )
            return done.exit_code, json.loads(done.stdout)

        code, report = doctor(*as_root)
        assert code == 0 and report["healthy"], json.dumps(report)[:1500]
        assert sorted(m["name"] for m in report["members"]) == ["m0", "m1", "m2"]  # type: ignore[attr-defined]
        code, report = doctor()  # no TLS options: nothing answers plain HTTP
        assert code == 1 and not report["healthy"]

        # Rejoin a wiped member, over TLS, as root: the leader, right after it
        # died. Its peers elect another first, and until then neither can log
        # root in; the rejoin waits for that instead of refusing.
        keys = {f"/asterfleet/t/k{i}": f"v{i}" for i in range(10)}
        for key, value in keys.items():
            EtcdClient(m0.endpoint, security=root).put(key, value)
        leader = EtcdClient(m0.endpoint, security=root).status().leader
        gone = next(
            i
            for i, m in enumerate(cluster)
            if EtcdClient(m.endpoint, security=root).status().member_id == leader
        )
        dead, left = cluster[gone], [m for m in cluster if m is not cluster[gone]]
        dead.kill()
        shutil.rmtree(dead.data_dir)
        rejoined = runner.invoke(
            etcd_app,
            ["rejoin", "--member", dead.name, "--data-dir", str(dead.data_dir),
             "--endpoints", ",".join(m.endpoint for m in left), "--json", *as_root],
            env=env,
        )  # fmt: skip
        assert rejoined.exit_code == 0, rejoined.output
        # Its peers still named the dead leader for a second: it waited.
        assert "rejoin " + dead.name + ": waiting for" in rejoined.stderr
        back = EtcdServer(
            dead.work_dir,
            name=dead.name,
            client_port=dead.client_port,
            peer_port=dead.peer_port,
            initial_cluster=json.loads(rejoined.stdout)["initial_cluster"],
            initial_cluster_state="existing",
            tls=tls,
            extra_args=["--enable-v2=true"],
        )
        back.log_path = dead.work_dir / f"{dead.name}-rejoined.log"
        cluster[gone] = back
        back.start().wait_healthy(30)
        assert EtcdClient(back.endpoint, security=root).get_prefix("/asterfleet/t/") == keys
        code, report = doctor(*as_root)
        assert code == 0 and report["healthy"], json.dumps(report)[:1500]

        # A discovery token on the TLS etcd (its v2 API has no users).
        new = runner.invoke(
            etcd_app,
            ["discovery", "new", "--size", "3", "--etcd", m0.endpoint, "--json",
             *pki.args(pki.root)],
        )  # fmt: skip
        assert new.exit_code == 0, new.output
        url = json.loads(new.output)["url"]
        assert url.startswith("https://")
        shown = runner.invoke(etcd_app, ["discovery", "show", url, "--json", *pki.args(pki.root)])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["size"] == 3
        rogue = runner.invoke(etcd_app, ["discovery", "show", url, *pki.args(pki.rogue)])
        assert rogue.exit_code == 1 and "TLS handshake failed" in rogue.output
        assert len(rogue.output.strip().splitlines()) == 1, rogue.output
    except BaseException:
        for member in cluster:
            print(f"==== {member.name} ====\n{member.log_tail(15)}")
        raise
    finally:
        stop_all(cluster)
