"""The asterfleet/asterisk image for real (issue 13.D2), run when
ASTERFLEET_ASTERISK_IMAGE names a built image (e.g.
``localhost/asterfleet/asterisk:22.10.1``, built from images/asterisk; see the
README, "Real Asterisk"). Skipped otherwise, with the reason.

On a podman network the test creates: one etcd (the etcd image) and two
Asterisk Pods from deploy/kubernetes/base's StatefulSet, each the Asterisk
image and the node agent beside it (the asterfleet image), started with
``podman kube play``. Kamailio and its balancer agent run on the network's
gateway address, publishing it as their SIP address: each box reads it from
etcd at start and identifies calls from there. A SIPp caller on the gateway
sends calls through Kamailio. A capture server on the gateway is the boxes'
``ASTERFLEET_CAPTURE_ADDRESS``: they load res_hep, res_hep_pjsip and
res_hep_rtcp and send it their SIP and RTCP reports. Figures are printed
(``-s``) for the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asterfleet.asterisk.boxconf import HEP_MODULES
from asterfleet.etcd_client import Etcd
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, parse_node
from asterfleet.kamailio.config import KamailioConfig
from asterfleet.kamailio.rpc import call_sync, parse_dispatcher_list
from asterfleet.kamailio.server import KamailioServer
from asterfleet.lab.stack import agent_argv
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from asterfleet.ship import kube
from asterfleet.ship.podman import Podman, PodmanError
from asterfleet.sipp.runner import SippUac
from tests.integration.calls import setup_failures
from tests.integration.test_capture_collector import CaptureServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
IMAGE_ENV = "ASTERFLEET_ASTERISK_IMAGE"
AGENT_IMAGE = os.environ.get("ASTERFLEET_AGENT_IMAGE", "localhost/asterfleet/asterfleet:0.1.0")
ETCD_IMAGE = os.environ.get("ASTERFLEET_ETCD_IMAGE", "localhost/asterfleet/etcd:0.1.0")
PREFIX = "astimage"
NETWORK = f"{PREFIX}-net"
SUBNET = "10.213.13.0/24"
GATEWAY = "10.213.13.1"  # Kamailio, its balancer agent and the caller
ETCD_IP = "10.213.13.10"
BOXES = {"asterisk-0": "10.213.13.31", "asterisk-1": "10.213.13.32"}
CLUSTER = "default"  # the node-agent ConfigMap's
DIALPLAN = """[fleet-dialplan]
exten => asterfleet,1,Answer()
 same => n,Wait(60)
 same => n,Hangup()
exten => echo,1,Answer()
 same => n,Echo()
 same => n,Hangup()
"""
RTP_SCENARIO = Path(__file__).parent / "scenarios" / "uac_rtp.xml"
#: Asterisk sends an RTCP report every 5 s (rtcpinterval) once RTP flows.
RTP_HOLD_MS = 8_000


def report(what: str, value: object) -> None:
    print(f"asterisk image figure: {what}: {value}", flush=True)


def require_image() -> str:
    image = os.environ.get(IMAGE_ENV)
    if not image:
        pytest.skip(
            f"{IMAGE_ENV} is not set: no built asterfleet/asterisk image to run "
            "(build images/asterisk, see the README's 'Real Asterisk')"
        )
    return image


@dataclass
class Fleet:
    podman: Podman
    work: Path
    image: str
    kamailio: KamailioServer | None = None
    balancer: ManagedProcess | None = None
    capture: CaptureServer | None = None
    docs: list[kube.Doc] = field(default_factory=list)
    pods: set[str] = field(default_factory=set)

    def pod(self, box: str) -> str:
        return f"{PREFIX}-{box}"

    def container(self, box: str, name: str) -> str:
        return f"{self.pod(box)}-{name}"

    def exec(self, box: str, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", self.container(box, name), *argv, check=False)

    def cli(self, box: str, command: str) -> str:
        """An Asterisk CLI command in the box, over its control socket."""
        return self.exec(
            box, "asterisk", "asterisk", "-C", "/etc/asterisk/asterisk.conf", "-rx", command
        ).stdout

    def play(self, box: str) -> None:
        pod = kube.pod_from_workload(
            self.docs,
            "StatefulSet",
            "asterisk",
            pod_name=self.pod(box),
            logical_name=box,
            pod_ip=BOXES[box],
            volume_root=str(self.work / "volumes"),
        )
        # The operator's dialplan, where asterisk-box looks for it.
        dialplan = self.work / "dialplan"
        spec = pod["spec"]
        # A Pod being deleted is not restarted by the kubelet; podman would
        # restart an agent that exits 0 after its drain (restartPolicy Always).
        spec["restartPolicy"] = "OnFailure"
        spec["volumes"].append(
            {"name": "dialplan", "hostPath": {"path": str(dialplan), "type": "Directory"}}
        )
        spec["containers"][0].setdefault("volumeMounts", []).append(
            {"name": "dialplan", "mountPath": "/etc/asterfleet", "readOnly": True}
        )
        for path in kube.host_paths(pod):
            if path == str(dialplan):
                continue
            shutil.rmtree(path, ignore_errors=True)  # a fresh emptyDir
            Path(path).mkdir(parents=True)
            os.chown(path, 10001, 10001)
        play = self.work / f"{box}.yaml"
        play.write_text(kube.play_yaml(self.docs, pod))
        self.pods.add(self.pod(box))
        self.podman.run("kube", "play", "--network", NETWORK, "--ip", BOXES[box], str(play))

    def dispatcher(self) -> dict[str, str]:
        """Kamailio's destinations: box address -> flags."""
        assert self.kamailio is not None
        try:
            listed = parse_dispatcher_list(
                call_sync(self.kamailio.rpc_target, "dispatcher.list", timeout=2.0)
            )
        except Exception as exc:
            if "No Destination Sets" in str(exc):
                return {}
            raise
        return {d.uri.split(":")[1]: d.flags for d in listed}

    def routable(self) -> set[str]:
        return {ip for ip, flags in self.dispatcher().items() if flags.startswith("A")}

    def record(self, box: str) -> NodeRecord | None:
        async def go() -> NodeRecord | None:
            key = Keyspace(CLUSTER).node(box)
            async with Etcd(f"{ETCD_IP}:2379") as etcd:
                kv = await etcd.get(key)
            return None if kv is None else parse_node(key, kv.value)

        return asyncio.run(go())


def render_base() -> list[kube.Doc]:
    out = subprocess.run(
        [require_binary("kubectl"), "kustomize", str(REPO / "deploy/kubernetes/base")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return kube.load_docs(out)


def configure(docs: list[kube.Doc], image: str, capture: str) -> list[kube.Doc]:
    """The base manifests with this test's images, etcd, capture server and
    short timeouts."""
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "node-agent":
            doc["data"]["ASTERFLEET_ETCD"] = f"{ETCD_IP}:2379"
            doc["data"]["ASTERFLEET_DRAIN_TIMEOUT"] = "60"
            doc["data"]["ASTERFLEET_DRAIN_SETTLE"] = "1"
        if doc.get("kind") == "Secret" and doc["metadata"]["name"] == "ami":
            doc["stringData"]["secret"] = "astimage-ami-secret"
        if doc.get("kind") == "StatefulSet" and doc["metadata"]["name"] == "asterisk":
            spec = doc["spec"]["template"]["spec"]
            spec["terminationGracePeriodSeconds"] = 70
            for container in spec["containers"]:
                container["image"] = image if container["name"] == "asterisk" else AGENT_IMAGE
                if container["name"] == "asterisk":
                    container["env"].append(
                        {"name": "ASTERFLEET_CAPTURE_ADDRESS", "value": capture}
                    )
    return docs


def _cleanup(podman: Podman, pods: list[str]) -> None:
    for pod in pods:
        podman.run("pod", "rm", "-f", "-t", "0", "--ignore", pod, check=False, timeout=60)
    podman.run("rm", "-f", "-t", "0", "--ignore", f"{PREFIX}-etcd", check=False, timeout=60)
    podman.run("network", "rm", "-f", NETWORK, check=False)


def _save_logs(fleet: Fleet) -> None:
    with contextlib.suppress(PodmanError, subprocess.TimeoutExpired):
        names = fleet.podman.out(
            "ps", "-a", "--format", "{{.Names}}", "--filter", f"name=^{PREFIX}-"
        )
        for name in names.split():
            done = fleet.podman.run("logs", "--tail", "200", name, check=False)
            (fleet.work / f"{name}.log").write_text(done.stdout + done.stderr)


def start_etcd(podman: Podman) -> None:
    podman.run(
        "run", "-d", "--name", f"{PREFIX}-etcd", "--network", NETWORK, "--ip", ETCD_IP,
        ETCD_IMAGE, "--name", "e0",
        "--listen-client-urls", "http://0.0.0.0:2379",
        "--advertise-client-urls", f"http://{ETCD_IP}:2379",
        "--listen-peer-urls", "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "e0=http://127.0.0.1:2380",
    )  # fmt: skip

    async def healthy() -> bool:
        async with Etcd(f"{ETCD_IP}:2379") as etcd:
            await etcd.get("/health")
        return True

    wait_for(lambda: asyncio.run(healthy()), 60, interval=0.5, what="etcd in its container")


def start_balancer(fleet: Fleet) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="af-img-"))  # short: unix socket paths
    kdir = fleet.work / "kamailio"
    kdir.mkdir()
    port = free_port()
    cfg = KamailioConfig(
        list_file=kdir / "dispatcher.list",
        rpc_socket=run_dir / "kamailio_rpc.sock",
        runtime_dir=run_dir,
        listen=(f"udp:{GATEWAY}:{port}",),
        children=2,
    )
    fleet.kamailio = KamailioServer(cfg, kdir).start()
    fleet.balancer = ManagedProcess(
        "balancer",
        agent_argv(
            "balancer", "run", "--etcd", f"{ETCD_IP}:2379", "--cluster", CLUSTER,
            "--id", "lb-0", "--list-file", str(cfg.list_file), "--rpc", fleet.kamailio.rpc_target,
            "--sip-address", GATEWAY,
        ),
        fleet.work / "balancer.log",
    ).start()  # fmt: skip


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    image = require_image()
    for program in ("podman", "kubectl", "kamailio", "sipp"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is missing: run scripts/ensure-deps.sh")
    podman = Podman.from_env()
    for needed in (image, AGENT_IMAGE, ETCD_IMAGE):
        if podman.run("image", "exists", needed, check=False).returncode != 0:
            pytest.fail(f"image {needed} is not in podman's store: build it first")
    work = Path(tempfile.mkdtemp(prefix="astimage-"))
    (work / "dialplan").mkdir()
    (work / "dialplan" / "dialplan.conf").write_text(DIALPLAN)
    os.chmod(work, 0o755)
    fleet = Fleet(podman, work, image)
    run_dir: Path | None = None
    try:
        _cleanup(podman, [fleet.pod(b) for b in BOXES])
        podman.run("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY,
                   "--disable-dns", NETWORK)  # fmt: skip
        start_etcd(podman)  # the network's gateway address exists from here on
        (work / "capture").mkdir()
        fleet.capture = CaptureServer(work / "capture", host=GATEWAY).start()
        fleet.docs = configure(render_base(), image, f"{GATEWAY}:{fleet.capture.port}")
        start_balancer(fleet)
        assert fleet.kamailio is not None
        run_dir = fleet.kamailio.cfg.runtime_dir
        started = time.monotonic()
        for box in BOXES:
            fleet.play(box)
        wait_for(
            lambda: fleet.routable() == set(BOXES.values()),
            180,
            interval=0.2,
            what="both Asterisk boxes routable in Kamailio",
        )
        report("kube play to both boxes routable (s)", round(time.monotonic() - started, 1))
        yield fleet
    finally:
        _save_logs(fleet)
        _cleanup(podman, sorted(fleet.pods))
        if fleet.balancer is not None:
            fleet.balancer.stop(grace=5)
        if fleet.kamailio is not None:
            fleet.kamailio.stop()
        if fleet.capture is not None:
            fleet.capture.stop()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        if os.environ.get("ASTERFLEET_KEEP_LOGS"):
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def test_asterisk_runs_unprivileged_with_the_rendered_config_and_is_healthy(
    fleet: Fleet,
) -> None:
    for box in BOXES:
        container = fleet.container(box, "asterisk")
        users = fleet.podman.out("top", container, "user", "comm")
        asterisk = [line.split() for line in users.splitlines() if line.endswith("asterisk")]
        assert asterisk and all(user in ("asterfleet", "10001") for user, _ in asterisk), users
        pjsip = fleet.exec(box, "asterisk", "cat", "/etc/asterisk/pjsip.conf").stdout
        assert "GENERATED by `asterfleet asterisk config`" in pjsip
        # The balancer's address, read from its record in etcd at start.
        assert f"match = {GATEWAY}" in pjsip
        # The agent probes and logs in from the Pod's address.
        assert f"match = {BOXES[box]}" in pjsip
        # The image's health check, run as podman would (kube play leaves it aside).
        test = json.loads(fleet.podman.out("image", "inspect", "--format",
                                           "{{json .HealthCheck.Test}}", fleet.image))  # fmt: skip
        assert test[0] == "CMD" and test[1:] == ["/usr/local/bin/asterisk-box", "health"]
        health = fleet.exec(box, "asterisk", *test[1:])
        assert health.returncode == 0, health.stdout + health.stderr
        # The Pod's startup and liveness probes (kube play turns them into podman
        # health checks, which run only under systemd): run in the container.
        spec = kube.find(fleet.docs, "StatefulSet", "asterisk")["spec"]["template"]["spec"]
        (declared,) = [c for c in spec["containers"] if c["name"] == "asterisk"]
        for probe in ("startupProbe", "livenessProbe"):
            alive = fleet.exec(box, "asterisk", *declared[probe]["exec"]["command"])
            assert alive.returncode == 0, (probe, alive.stdout + alive.stderr)
        # Capture is configured: the HEP modules are built into the image and loaded.
        hep = fleet.cli(box, "module show like hep")
        assert (
            all(f"{m} " in hep for m in HEP_MODULES) and f"{len(HEP_MODULES)} modules loaded" in hep
        ), hep
        assert (
            "capture_address" in fleet.exec(box, "asterisk", "cat", "/etc/asterisk/hep.conf").stdout
        )
        # A clean start: every file Asterisk reads was rendered.
        log = fleet.podman.run("logs", container, check=False)
        errors = [line for line in (log.stdout + log.stderr).splitlines() if "ERROR[" in line]
        assert errors == []


def test_a_balancer_joining_etcd_is_identified_by_the_running_boxes(fleet: Fleet) -> None:
    """The box's follower re-renders pjsip.conf and reloads res_pjsip (no restart)."""
    address = "10.213.13.2"
    lb = ManagedProcess(
        "balancer-2",
        agent_argv(
            "balancer", "run", "--etcd", f"{ETCD_IP}:2379", "--cluster", CLUSTER,
            "--id", "lb-1", "--list-file", str(fleet.work / "lb-1.list"),
            "--rpc", str(fleet.work / "lb-1.sock"), "--sip-address", address,
        ),
        fleet.work / "balancer-2.log",
    ).start()  # fmt: skip

    def identified(box: str) -> bool:
        done = fleet.exec(
            box, "asterisk", "asterisk", "-C", "/etc/asterisk/asterisk.conf", "-rx",
            "pjsip show identifies",
        )  # fmt: skip
        return f"{address}/32" in done.stdout

    try:
        started = time.monotonic()
        for box in BOXES:
            wait_for(lambda box=box: identified(box), 60, interval=0.5, what=f"{box} reloaded")  # type: ignore[misc]
        report("balancer joined etcd to identified by both boxes (s)",
               round(time.monotonic() - started, 1))  # fmt: skip

        # The follower's metrics, on the port the StatefulSet gives it.
        def scrape(ip: str) -> str:
            with urllib.request.urlopen(f"http://{ip}:9102/metrics", timeout=5) as r:
                return str(r.read().decode())

        ok = 'asterfleet_box_config_reloads_total{module="res_pjsip.so",result="ok"}'
        for ip in BOXES.values():
            wait_for(lambda ip=ip: ok in scrape(ip), 10, what=f"the reload counted at {ip}")  # type: ignore[misc]
            assert "asterfleet_box_config_balancers 2.0" in scrape(ip)
    finally:
        lb.stop()
    for box in BOXES:
        wait_for(lambda box=box: not identified(box), 60, interval=0.5, what=f"{box} dropped it")  # type: ignore[misc]
    # The balancer that stayed is still identified.
    for box in BOXES:
        done = fleet.exec(box, "asterisk", "asterisk", "-C", "/etc/asterisk/asterisk.conf",
                          "-rx", "pjsip show identifies")  # fmt: skip
        assert f"{GATEWAY}/32" in done.stdout


def test_a_changed_dialplan_is_loaded_by_the_running_boxes(fleet: Fleet) -> None:
    """The mounted dialplan (a ConfigMap in Kubernetes) changes: the follower
    copies it in and reloads pbx_config."""

    def has(box: str, exten: str) -> bool:
        done = fleet.exec(box, "asterisk", "asterisk", "-C", "/etc/asterisk/asterisk.conf",
                          "-rx", f"dialplan show {exten}@fleet-dialplan")  # fmt: skip
        return f"'{exten}' =>" in done.stdout

    assert all(has(box, "asterfleet") and not has(box, "4711") for box in BOXES)
    mounted = fleet.work / "dialplan" / "dialplan.conf"
    mounted.write_text(DIALPLAN + "exten => 4711,1,Answer()\n same => n,Hangup()\n")
    for box in BOXES:
        wait_for(lambda box=box: has(box, "4711"), 30, interval=0.5, what=f"{box}'s new dialplan")  # type: ignore[misc]
        assert has(box, "asterfleet")


def test_a_calls_rtcp_reports_reach_the_capture_server(fleet: Fleet) -> None:
    """res_hep_rtcp in the image: a call with RTP both ways (SIPp streams,
    the box's Echo() sends it back), and the box's RTCP reports (HEP type 5)
    are stored for that call, beside its SIP (res_hep_pjsip)."""
    assert fleet.kamailio is not None and fleet.capture is not None
    port = int(fleet.kamailio.cfg.listen[0].rsplit(":", 1)[1])
    work = fleet.work / "rtp-caller"
    work.mkdir()
    (work / "audio.ulaw").write_bytes(b"\xff" * 8000)  # 1 s of u-law silence, looped
    rtp = free_port(socket.SOCK_DGRAM, GATEWAY) & ~1
    uac = SippUac(
        work, GATEWAY, port, rate=1, hold_ms=RTP_HOLD_MS, max_calls=1, service="echo",
        host=GATEWAY, scenario=RTP_SCENARIO, extra_args=["-mp", str(rtp), "-mi", GATEWAY],
        name="rtp-caller",
    ).start()  # fmt: skip
    try:
        assert uac.wait(timeout=60) == 0, uac.log_tail()
    finally:
        uac.stop()
    assert uac.stats().successful_calls == 1

    def query(sql: str, *args: object) -> list[sqlite3.Row]:
        assert fleet.capture is not None
        with contextlib.closing(sqlite3.connect(fleet.capture.db)) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, args).fetchall()

    # The call's INVITE as the box that took it captured it (Kamailio sends no HEP here).
    invites = wait_for(
        lambda: query(
            "SELECT call_id, capture_host FROM sip_messages WHERE method = 'INVITE' "
            "AND to_user = 'echo'"
        ),
        20,
        what="the echo call's INVITE, captured by its box",
    )
    assert isinstance(invites, list)
    assert len({r["call_id"] for r in invites}) == 1, [dict(r) for r in invites]
    call_id, box = invites[0]["call_id"], invites[0]["capture_host"]
    assert box in BOXES, box

    reports = wait_for(
        lambda: query("SELECT * FROM rtcp_reports WHERE call_id = ?", call_id),
        20,
        what="the echo call's RTCP reports, stored",
    )
    assert isinstance(reports, list)
    report("RTCP reports stored for one 8 s call", len(reports))
    caller = f"{GATEWAY}:{rtp + 1}"  # SIPp's RTCP port: its RTP port + 1
    for r in reports:
        assert r["capture_host"] == box
        ends = {f"{r['src_ip']}:{r['src_port']}", f"{r['dst_ip']}:{r['dst_port']}"}
        assert caller in ends, dict(r)
        # The box sends the echo: sender reports, on SIPp's stream, with no loss.
        assert r["report_type"] in (200, 201), dict(r)
        assert (r["fraction_lost"], r["packets_lost"]) == (0.0, 0), dict(r)
        assert 1.0 <= r["mos"] <= 4.41, dict(r)
    assert any(r["report_type"] == 200 for r in reports), [dict(r) for r in reports]
    assert fleet.capture.counts().get("rejected_bad_rtcp", 0) == 0


def test_calls_are_answered_counted_over_ami_and_a_drain_fails_none(fleet: Fleet) -> None:
    assert fleet.kamailio is not None
    port = int(fleet.kamailio.cfg.listen[0].rsplit(":", 1)[1])
    uac = SippUac(
        fleet.work / "caller", GATEWAY, port, rate=10, hold_ms=3000, host=GATEWAY,
        recv_timeout_ms=8000, name="caller",
    ).start()  # fmt: skip
    try:
        counted = wait_for(
            lambda: all((r := fleet.record(b)) is not None and r.active_calls for b in BOXES),
            60,
            interval=0.5,
            what="calls counted over AMI on both boxes",
        )
        assert counted
        records = {box: fleet.record(box) for box in BOXES}
        for record in records.values():
            assert record is not None
            assert record.asterisk_version is not None
            assert record.asterisk_version.startswith("22."), record
            assert record.calls_error is None, record
        report("active calls per box under 10 calls/s, 3 s hold",
               {b: r.active_calls for b, r in records.items() if r})  # fmt: skip
        drained, other = "asterisk-0", "asterisk-1"
        agent = fleet.container(drained, "node-agent")
        started = time.monotonic()
        fleet.podman.run("kill", "--signal", "TERM", agent)
        code = fleet.podman.out("wait", agent, timeout=120)
        report("SIGTERM to agent exit, drain (s)", round(time.monotonic() - started, 1))
        assert code == "0", f"{drained}'s agent exited with {code}"
        assert fleet.routable() == {BOXES[other]}
        logs = fleet.podman.run("logs", agent, check=False)
        assert "drained" in logs.stdout + logs.stderr
        # Then, as the Asterisk container's preStop hook lets the kubelet do,
        # Asterisk itself gets SIGTERM: it has no call left to lose.
        fleet.podman.run("stop", "-t", "30", fleet.container(drained, "asterisk"), timeout=60)
        placed = uac.stats().total_calls_created
        wait_for(
            lambda: uac.stats().total_calls_created >= placed + 30,
            30,
            what="calls placed after the drain",
        )
    finally:
        stats = uac.stop_gracefully(timeout=30)
    report("calls placed, succeeded, failed",
           (stats.total_calls_created, stats.successful_calls, stats.failed_calls))  # fmt: skip
    assert stats.successful_calls >= 60
    assert setup_failures(uac) == 0
    assert stats.failed_calls == 0
