"""Two Kamailio balancers behind a keepalived virtual IP, in network namespaces.

One bridge joins five hosts, each its own namespace created (and removed) by
the test: balancers lb1 and lb2 (Kamailio + keepalived), two SIPp boxes, and
a caller placing calls to the VIP at a steady rate. The balancers use a
static dispatcher.list (the balancer agent is tested elsewhere). Kamailio
listens on its own address and on the VIP: the backup binds the VIP before
it holds it through Kamailio's ``ip_free_bind`` (``kamailio config
--free-bind``, as in the cluster), no ``ip_nonlocal_bind`` sysctl. Replies,
Via and Record-Route then carry the VIP, so in-dialog requests follow
whichever balancer holds it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asterfleet.kamailio.config import KamailioConfig
from asterfleet.kamailio.server import KamailioServer
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from asterfleet.sipp.runner import SippUac, SippUas
from asterfleet.testing.netns import Host, NetnsLab, in_namespace, ip
from asterfleet.vip.health import check_command
from asterfleet.vip.keepalived import KeepalivedOptions, render_keepalived_conf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

VIP = "10.77.0.100"
# High priorities keep VRRP's skew time short: master-down = 3 adverts + (256 - prio)/256 s.
LB = {"lb1": ("10.77.0.11", 250), "lb2": ("10.77.0.12", 240)}
BACKENDS = {"be1": "10.77.0.21", "be2": "10.77.0.22"}
CALLER = "10.77.0.31"
SIP_PORT = 5060
CONTROL_PORT = 8888
CHECK = check_command()


class NsKamailio(KamailioServer):
    def __init__(self, ns: str, cfg: KamailioConfig, work_dir: Path) -> None:
        super().__init__(cfg, work_dir)
        self.ns = ns

    def argv(self) -> list[str]:
        return in_namespace(self.ns, super().argv())


class NsUas(SippUas):
    def __init__(self, ns: str, workdir: Path, host: str) -> None:
        super().__init__(
            workdir, SIP_PORT, host=host, control_port=CONTROL_PORT, name=f"uas-{host}"
        )
        self.ns = ns

    def argv(self) -> list[str]:
        return in_namespace(self.ns, super().argv())


class NsUac(SippUac):
    def __init__(self, ns: str, workdir: Path) -> None:
        super().__init__(
            workdir,
            VIP,
            SIP_PORT,
            rate=10,
            hold_ms=300,
            recv_timeout_ms=4000,
            host=CALLER,
            port=SIP_PORT,
            control_port=CONTROL_PORT,
            name="caller",
        )
        self.ns = ns

    def argv(self) -> list[str]:
        return in_namespace(self.ns, super().argv())


@dataclass
class Balancer:
    name: str
    host: Host
    kamailio: NsKamailio
    conf: Path
    work: Path
    keepalived: ManagedProcess | None = None
    starts: int = 0

    def start_keepalived(self) -> None:
        self.starts += 1
        run = self.work / f"run{self.starts}"
        run.mkdir()
        argv = [
            require_binary("keepalived"),
            "-n",  # foreground
            "-l",  # log to the console (captured)
            "-D",  # detailed log
            "-P",  # VRRP only: no health checkers subprocess for LVS
            "-f", str(self.conf),
            "-p", str(run / "keepalived.pid"),
            "-r", str(run / "vrrp.pid"),
        ]  # fmt: skip
        self.keepalived = ManagedProcess(
            f"keepalived-{self.name}",
            in_namespace(self.host.ns, argv),
            self.work / f"keepalived{self.starts}.log",
        ).start()

    def state(self) -> str | None:
        """The VRRP state keepalived last entered (MASTER, BACKUP, FAULT)."""
        log = self.keepalived.log_tail(400) if self.keepalived else ""
        states = re.findall(r"Entering (\w+) STATE", log)
        return states[-1] if states else None

    def holds_vip(self) -> bool:
        return self.host.has(VIP)

    def stop(self) -> None:
        if self.keepalived is not None:
            self.keepalived.stop(grace=5)
        self.kamailio.stop(grace=5)


@dataclass
class Pair:
    lab: NetnsLab
    lbs: dict[str, Balancer]
    caller: NsUac
    backends: list[NsUas] = field(default_factory=list)

    def holders(self) -> list[str]:
        return [name for name, lb in self.lbs.items() if lb.holds_vip()]

    def holder(self) -> Balancer:
        (name,) = self.holders()
        return self.lbs[name]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    for program in ("keepalived", "kamailio", "sipp", "ip"):
        require_binary(program)
    sockets = Path(tempfile.mkdtemp(prefix="af-"))
    lab = NetnsLab()
    balancers: dict[str, Balancer] = {}
    backends: list[NsUas] = []
    caller: NsUac | None = None
    try:
        lab.open()
        for name, addr in BACKENDS.items():
            host = lab.add_host(name, addr)
            backend = NsUas(host.ns, tmp_path / name, addr)
            backends.append(backend)
            backend.start()
        dlist = tmp_path / "dispatcher.list"
        dlist.write_text(
            "".join(
                f"1 sip:{addr}:{SIP_PORT};transport=udp 0 0 duid={name};weight=50\n"
                for name, addr in BACKENDS.items()
            )
        )
        for name, (addr, priority) in LB.items():
            host = lab.add_host(name, addr)
            work = tmp_path / name
            cfg = KamailioConfig(
                list_file=dlist,
                rpc_socket=sockets / f"{name}.sock",
                runtime_dir=sockets / name,
                listen=(f"udp:{addr}:{SIP_PORT}", f"udp:{VIP}:{SIP_PORT}"),
                fr_timer_ms=1000,
                children=2,
                free_bind=True,  # what `kamailio config --free-bind` sets
            )
            kamailio = NsKamailio(host.ns, cfg, work)
            kamailio.start()
            conf = work / "keepalived.conf"
            conf.write_text(
                render_keepalived_conf(
                    KeepalivedOptions(
                        interface="eth0",
                        vip=f"{VIP}/24",
                        peers=[a for n, (a, _) in LB.items() if n != name],
                        priority=priority,
                        auth_pass="t3stpass",
                        rpc=str(cfg.rpc_socket),
                        router_id=name,
                        unicast_src=addr,
                        check_command=CHECK,
                        notify=f"/bin/sh -c 'echo $0 $1 $2 $3 >> {work}/notify.log'",
                    )
                )
            )
            conf.chmod(0o600)
            balancers[name] = Balancer(name, host, kamailio, conf, work)
        for lb in balancers.values():
            lb.start_keepalived()
        caller_host = lab.add_host("caller", CALLER)
        pair = Pair(lab, balancers, NsUac(caller_host.ns, tmp_path / "caller"), backends)
        wait_for(lambda: len(pair.holders()) == 1, 15, what="one balancer to take the VIP")
        caller = pair.caller
        caller.start()
        yield pair
    finally:
        if caller is not None:
            caller.stop()
        for lb in balancers.values():
            lb.stop()
        for uas in backends:
            uas.stop()
        lab.close()
        shutil.rmtree(sockets, ignore_errors=True)


def _wait_new_calls_succeed(pair: Pair, count: int = 20) -> None:
    base = pair.caller.stats().successful_calls
    wait_for(
        lambda: pair.caller.stats().successful_calls >= base + count,
        20,
        interval=0.2,
        what=f"{count} more successful calls through the VIP",
    )


def _failover(pair: Pair, fail: str) -> tuple[str, float, int]:
    """Fail the VIP holder (``kamailio`` or ``host``); (new holder, seconds, failed calls)."""
    old = pair.holder()
    failed_before = pair.caller.stats().failed_calls
    t0 = time.monotonic()
    if fail == "kamailio":
        old.kamailio.stop(grace=5)
    else:
        # The whole host dies: every process at once, and its link.
        assert old.keepalived is not None
        old.keepalived.kill()
        assert old.kamailio.process is not None
        old.kamailio.process.kill()
        ip("link", "set", "eth0", "down", ns=old.host.ns)
    new = next(lb for lb in pair.lbs.values() if lb is not old)
    wait_for(new.holds_vip, 10, interval=0.05, what=f"{new.name} to take the VIP")
    moved_after = time.monotonic() - t0
    # Calls set up during the switch either succeed on INVITE retransmission
    # or time out (recv_timeout 4 s); count them once they have settled.
    _wait_new_calls_succeed(pair, 60)
    return new.name, moved_after, pair.caller.stats().failed_calls - failed_before


def test_vip_fails_over_and_does_not_flap(pair: Pair) -> None:
    _wait_new_calls_succeed(pair)
    first = pair.holder()
    assert first.name == "lb1"  # the higher priority wins the first election
    report: dict[str, object] = {}

    # (a) Kamailio stops on the active balancer: the health check fails and
    # the VIP moves.
    holder, moved, failed = _failover(pair, "kamailio")
    assert holder == "lb2"
    assert moved < 4.0, f"VIP moved after {moved:.2f}s"
    report["a"] = (round(moved, 2), failed)
    first.kamailio.start()  # lb1 healthy again: nopreempt keeps it BACKUP

    # (b) The active host dies entirely.
    wait_for(lambda: first.state() == "BACKUP", 10, what="lb1 healthy again, as BACKUP")
    holder, moved, failed = _failover(pair, "host")
    assert holder == "lb1"
    assert moved < 4.0, f"VIP moved after {moved:.2f}s"
    report["b"] = (round(moved, 2), failed)

    # (c) The dead balancer comes back (a reboot: no VIP left on it).
    dead = pair.lbs["lb2"]
    ip("addr", "flush", "dev", "eth0", ns=dead.host.ns)
    ip("addr", "add", f"{LB['lb2'][0]}/24", "dev", "eth0", ns=dead.host.ns)
    ip("link", "set", "eth0", "up", ns=dead.host.ns)
    dead.kamailio.start()
    dead.start_keepalived()
    failed_before = pair.caller.stats().failed_calls
    samples: list[list[str]] = []
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline and len(samples) < 100:
        samples.append(pair.holders())
        time.sleep(0.1)
    assert all(s == ["lb1"] for s in samples), samples
    assert "Entering BACKUP STATE" in (dead.keepalived.log_tail(400) if dead.keepalived else "")
    _wait_new_calls_succeed(pair)
    report["c"] = (len(samples), pair.caller.stats().failed_calls - failed_before)
    print(f"\nVIP failover figures (seconds to move, failed calls): {report}")
    final = pair.caller.stop_gracefully(30)
    print(f"caller total: {final.successful_calls} ok, {final.failed_calls} failed")
