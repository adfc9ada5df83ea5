"""A fleet of real containers on a podman network, started from deploy/kubernetes.

Three etcd members, two kamailio-lb Pods sharing a virtual IP (keepalived,
unicast VRRP), four testbox Pods (SIPp as the box + node agent), all from the
Pod templates of the ``podman`` overlay through ``podman kube play``, each
with a fixed address on a network this module creates and removes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from asterfleet.runtime.process import require_binary, wait_for
from asterfleet.ship import kube
from asterfleet.ship.images import ImageBuilder
from asterfleet.ship.podman import Podman, PodmanError
from asterfleet.sipp.runner import parse_counts_csv

REPO = Path(__file__).resolve().parents[2]
PREFIX = "cluster"
SUBNET = "10.213.7.0/24"
GATEWAY = "10.213.7.1"
VIP = "10.213.7.100"
ETCD = {f"etcd-{i}": f"10.213.7.1{i + 1}" for i in range(3)}
LBS = {f"lb-{i}": f"10.213.7.2{i + 1}" for i in range(2)}
BOXES = {f"asterisk-{i}": f"10.213.7.3{i + 1}" for i in range(4)}
TTL = 3
_DISPATCHER_ENTRY = re.compile(r"URI:\s*sip:([0-9.]+):\d+[^\n]*\n\s*FLAGS:\s*(\w+)")


@functools.cache
def ensure_images() -> float:
    """``make images`` once per test session (the layer cache makes it about a
    minute when nothing changed, a cold build about nine); seconds it took."""
    started = time.monotonic()
    ImageBuilder(REPO, quiet=True).build()
    return time.monotonic() - started


def render_overlay() -> list[kube.Doc]:
    kubectl = require_binary("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(REPO / "deploy/kubernetes/overlays/podman")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    docs = kube.load_docs(out)
    endpoints = ",".join(f"{name}.etcd:2379" for name in ETCD)
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "kamailio-lb":
            doc["data"]["ASTERFLEET_VIP"] = f"{VIP}/24"
            doc["data"]["ASTERFLEET_VRRP_PEERS"] = ",".join(LBS.values())
            doc["data"]["ASTERFLEET_ETCD"] = endpoints
        if doc.get("kind") == "Secret" and doc["metadata"]["name"] == "vrrp":
            doc["stringData"]["password"] = "shipvrrp"
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "node-agent":
            doc["data"]["ASTERFLEET_ETCD"] = endpoints
    return docs


@dataclass
class Cluster:
    podman: Podman
    network: str
    docs: list[kube.Doc]
    work: Path
    pods: set[str] = field(default_factory=set)

    # ----- pods -----

    def pod_name(self, logical: str) -> str:
        return f"{PREFIX}-{logical}"

    def play(self, kind: str, workload: str, logical: str, ip: str) -> None:
        aliases = {f"{name}.etcd": addr for name, addr in ETCD.items()}
        pod = kube.pod_from_workload(
            self.docs,
            kind,
            workload,
            pod_name=self.pod_name(logical),
            logical_name=logical,
            pod_ip=ip,
            volume_root=str(self.work / "volumes"),
            host_aliases=aliases,
            # A box's agent that drained on SIGTERM exits 0 and must stay down
            # (see asterfleet.ship.kube); a crash is still restarted.
            restart_policy="OnFailure" if workload == "asterisk" else None,
        )
        for path in kube.host_paths(pod):
            # Empty and owned by the images' asterfleet user, like a fresh emptyDir.
            shutil.rmtree(path, ignore_errors=True)
            Path(path).mkdir(parents=True)
            os.chown(path, 10001, 10001)
        path = self.work / f"{logical}.yaml"
        path.write_text(kube.play_yaml(self.docs, pod))
        self.pods.add(self.pod_name(logical))
        self.podman.run("kube", "play", "--network", self.network, "--ip", ip, str(path))

    def remove_pod(self, logical: str) -> None:
        """Remove a Pod (its containers' logs are kept in the work directory)."""
        _save_logs(self, f"{self.pod_name(logical)}-")
        self.podman.run("pod", "rm", "-f", "-t", "0", self.pod_name(logical), check=False)

    def container(self, logical: str, name: str) -> str:
        return f"{self.pod_name(logical)}-{name}"

    def exec(self, logical: str, name: str, *argv: str, timeout: float = 30.0) -> str:
        return self.podman.out("exec", self.container(logical, name), *argv, timeout=timeout)

    def infra(self, logical: str) -> str:
        return self.podman.out(
            "pod", "inspect", "--format", "{{.InfraContainerID}}", self.pod_name(logical)
        )

    def pids(self, logical: str) -> list[int]:
        """The host pid of every container of a Pod (infra included)."""
        ids = self.podman.out(
            "pod", "inspect", "--format", "{{range .Containers}}{{.Id}} {{end}}",
            self.pod_name(logical),
        ).split()  # fmt: skip
        return [int(self.podman.out("inspect", "--format", "{{.State.Pid}}", i)) for i in ids]

    def infra_pid(self, logical: str) -> int:
        return int(self.podman.out("inspect", "--format", "{{.State.Pid}}", self.infra(logical)))

    # ----- what the balancers route to -----

    def dispatcher(self, lb: str) -> dict[str, str]:
        """Kamailio's in-memory dispatcher list on one balancer: box address -> flags."""
        out = self.exec(
            lb, "kamailio", "kamcmd", "-s", "unix:/run/asterfleet/kamailio_ctl", "dispatcher.list"
        )
        return dict(_DISPATCHER_ENTRY.findall(out))

    def routable(self, lb: str) -> set[str]:
        """Boxes that take new calls on this balancer (flags AP: active, probing)."""
        return {ip for ip, flags in self.dispatcher(lb).items() if flags.startswith("A")}

    def wait_routable(self, expected: set[str], timeout: float = 30.0) -> None:
        for lb in LBS:
            wait_for(
                lambda lb=lb: self.routable(lb) == expected,  # type: ignore[misc]
                timeout,
                interval=0.2,
                what=f"{lb} routing to {sorted(expected)}",
            )

    def vip_holders(self) -> list[str]:
        """Balancers with the VIP on their interface (a stopped one holds nothing)."""
        out = []
        for lb in LBS:
            try:
                addrs = self.exec(lb, "keepalived", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
            except PodmanError:
                if self.running(lb, "keepalived"):
                    raise
                continue
            if f" {VIP}/" in addrs:
                out.append(lb)
        return out

    def netns_holds_vip(self, pid: int) -> bool:
        """Whether the network namespace of process ``pid`` (a Pod's infra
        container) has the VIP: read with nsenter, in milliseconds, where
        ``podman exec`` takes up to a second on a loaded machine. A namespace
        that is gone (its Pod stopped) holds nothing."""
        done = subprocess.run(
            [require_binary("nsenter"), "-t", str(pid), "-n",
             require_binary("ip"), "-4", "-o", "addr", "show", "dev", "eth0"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return done.returncode == 0 and f" {VIP}/" in done.stdout

    def running(self, logical: str, name: str) -> bool:
        state = self.podman.run(
            "inspect", "--format", "{{.State.Running}}", self.container(logical, name), check=False
        )
        return state.stdout.strip() == "true"

    def vip_held_metric(self, lb: str) -> float | None:
        """asterfleet_balancer_vip_held as this balancer's agent exports it, None
        when its metrics endpoint does not answer (a stopped balancer)."""
        try:
            text = httpx.get(f"http://{LBS[lb]}:9102/metrics", timeout=3).text
        except httpx.HTTPError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "asterfleet_balancer_vip_held" and sample.labels == {"vip": VIP}:
                    return sample.value
        return None

    def applied_with(self, lb: str, nodes: int, since: float) -> float | None:
        """Wall-clock time at which this balancer's agent first gave Kamailio a
        list of ``nodes`` boxes after ``since`` (its "applied" log event), or
        None. Polling Kamailio over ``podman exec`` adds up to a second on a
        loaded machine; the agent's own timestamp does not."""
        logs = self.podman.run(
            "logs", "--since", f"{since:.3f}", self.container(lb, "balancer"), check=False
        )
        for line in (logs.stdout + logs.stderr).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("event") != "applied":
                continue
            at = datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()
            if at >= since and event.get("nodes") == nodes:
                return at
        return None

    # ----- etcd -----

    def etcdctl(self, *argv: str, member: str = "etcd-0", timeout: float = 15.0) -> str:
        return subprocess.run(
            [require_binary("etcdctl"), f"--endpoints=http://{ETCD[member]}:2379",
             "--command-timeout=5s", *argv],
            capture_output=True, text=True, check=True, timeout=timeout,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        ).stdout  # fmt: skip

    def try_put(self, key: str, value: str) -> bool:
        try:
            self.etcdctl("put", key, value)
        except subprocess.CalledProcessError:
            return False
        return True

    def is_leader(self, member: str) -> bool:
        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json", member=member))
        return bool(status[0]["Status"]["leader"] == status[0]["Status"]["header"]["member_id"])

    def member_revision(self, member: str) -> int:
        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json", member=member))
        return int(status[0]["Status"]["header"]["revision"])

    def box_invites(self, box: str) -> int:
        """Initial INVITEs the box's SIPp has received (from its -trace_counts file)."""
        text = self.exec(box, "asterisk", "sh", "-c", "cat /run/asterfleet/box/*_counts.csv")
        counts = parse_counts_csv(text)
        return sum(v for k, v in counts.items() if k.endswith("_INVITE_Recv"))


def _wait_etcd(cluster: Cluster) -> None:
    def healthy() -> bool:
        try:
            for member in ETCD:
                cluster.etcdctl("endpoint", "health", member=member)
            return True
        except subprocess.CalledProcessError:
            return False

    wait_for(healthy, 60, interval=0.5, what="the three etcd members healthy")


# With cgroup v1 and cgroupfs, podman puts every container under one
# top-level cgroup whose weight is that of ONE process: on a busy 2-core
# machine (load 30+) the whole cluster then gets a thirtieth of a core and
# Python takes a minute to start. While the test runs, that cgroup weighs
# as much as the processes the cluster has (about 30), then it is restored.
_LIBPOD_SHARES = Path("/sys/fs/cgroup/cpu/libpod_parent/cpu.shares")
_CLUSTER_SHARES = 30 * 1024


@contextlib.contextmanager
def fair_cpu_share() -> Iterator[None]:
    if not _LIBPOD_SHARES.parent.parent.is_dir():
        yield  # cgroup v2 or another layout: nothing to adjust
        return
    _LIBPOD_SHARES.parent.mkdir(exist_ok=True)
    before = _LIBPOD_SHARES.read_text().strip()
    _LIBPOD_SHARES.write_text(str(_CLUSTER_SHARES))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            _LIBPOD_SHARES.write_text(before)


@contextlib.contextmanager
def podman_cluster(work: Path) -> Iterator[Cluster]:
    """Start the whole fleet; remove every pod, volume and the network after."""
    podman = Podman.from_env()
    network = f"{PREFIX}-net"
    docs = render_overlay()
    cluster = Cluster(podman, network, docs, work)
    with contextlib.ExitStack() as stack:
        stack.enter_context(fair_cpu_share())
        yield from _run_cluster(cluster, podman, network)


def _run_cluster(cluster: Cluster, podman: Podman, network: str) -> Iterator[Cluster]:
    try:
        _cleanup(podman, network, [cluster.pod_name(n) for n in (*ETCD, *LBS, *BOXES)])
        podman.run("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY,
                   "--disable-dns", network)  # fmt: skip
        for name, ip in ETCD.items():
            cluster.play("StatefulSet", "etcd", name, ip)
        _wait_etcd(cluster)
        for name, ip in LBS.items():
            cluster.play("DaemonSet", "kamailio-lb", name, ip)
        for name, ip in BOXES.items():
            cluster.play("StatefulSet", "asterisk", name, ip)
        # Generous: a cold start of every Python process on a loaded 2-core machine.
        cluster.wait_routable(set(BOXES.values()), timeout=180)
        wait_for(lambda: len(cluster.vip_holders()) == 1, 60, interval=0.2, what="one VIP holder")
        yield cluster
    finally:
        _save_logs(cluster)
        _cleanup(podman, network, sorted(cluster.pods))


def _save_logs(cluster: Cluster, prefix: str = f"{PREFIX}-") -> None:
    """Each container's log tail into the work directory (kept on failure
    with ASTERFLEET_KEEP_LOGS); a replaced Pod's logs get a numbered name."""
    with contextlib.suppress(PodmanError, subprocess.TimeoutExpired):
        names = cluster.podman.out("ps", "-a", "--format", "{{.Names}}", "--filter",
                                   f"name=^{prefix}")  # fmt: skip
        for name in names.split():
            done = cluster.podman.run("logs", "--tail", "400", name, check=False)
            path = cluster.work / f"{name}.log"
            for n in range(1, 100):
                if not path.exists():
                    break
                path = cluster.work / f"{name}.{n}.log"
            path.write_text(done.stdout + done.stderr)


def _cleanup(podman: Podman, network: str, pods: list[str]) -> None:
    for pod in pods:
        podman.run("pod", "rm", "-f", "-t", "0", "--ignore", pod, check=False, timeout=60)
    podman.run("network", "rm", "-f", network, check=False)


def elapsed_until(predicate: object, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` holds, or None after ``timeout``."""
    assert callable(predicate)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None
