"""The agent's probe step against a drain that arrives while the probe is out,
and against what a real UDP socket on loopback answers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from asterfleet.fleet.model import NodeState
from asterfleet.node import agent as agent_module
from asterfleet.node.agent import NodeAgent, NodeAgentConfig
from asterfleet.sip.options import ProbeResult


def make_agent(port: int = 5999) -> NodeAgent:
    cfg = NodeAgentConfig(
        etcd="127.0.0.1:1",
        cluster="t",
        node_id="ast1",
        sip_uri=f"sip:127.0.0.1:{port};transport=udp",
        probe_timeout=0.5,
    )
    return NodeAgent(cfg)


def test_a_drain_during_an_in_flight_probe_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> list[NodeState]:
        agent = make_agent()
        agent.state = NodeState.ACTIVE
        released = asyncio.Event()
        probing = asyncio.Event()

        async def slow_probe(*_: object) -> ProbeResult:
            probing.set()
            await released.wait()  # Asterisk takes its time to answer 200
            return ProbeResult(200, 5.0, None)

        monkeypatch.setattr(agent_module, "probe", slow_probe)
        step = asyncio.create_task(agent._probe_once())
        await probing.wait()
        agent.draining = True
        agent._decide(None)  # what drain() does on SIGTERM
        seen = [agent.state]
        released.set()
        await step
        seen.append(agent.state)
        return seen

    assert asyncio.run(go()) == [NodeState.DRAINING, NodeState.DRAINING]


def test_connection_refused_is_unhealthy_at_once() -> None:
    # A UDP port nobody listens on: the kernel answers ICMP port unreachable.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> NodeAgent:
        agent = make_agent(port)
        agent.state = NodeState.DRAINING
        await agent._probe_once()
        return agent

    agent = asyncio.run(go())
    assert agent.state is NodeState.UNHEALTHY
    reason = agent.record().reason
    assert reason is not None and "refused" in reason


def test_a_401_to_the_probe_is_a_configuration_error() -> None:
    async def go() -> NodeAgent:
        loop = asyncio.get_running_loop()

        class Answer401(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
                head = data.decode()
                keep = [
                    ln
                    for ln in head.split("\r\n")
                    if ln.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")
                ]
                reply = "SIP/2.0 401 Unauthorized\r\n" + "\r\n".join(keep)
                reply += "\r\nContent-Length: 0\r\n\r\n"
                self.transport.sendto(reply.encode(), addr)  # type: ignore[attr-defined]

        transport, _ = await loop.create_datagram_endpoint(Answer401, local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            agent = make_agent(port)
            agent.state = NodeState.ACTIVE
            await agent._probe_once()
            return agent
        finally:
            transport.close()

    agent = asyncio.run(go())
    assert agent.state is NodeState.UNHEALTHY
    record = agent.record()
    assert record.probe == "401"
    assert record.reason is not None and "401" in record.reason


def test_a_drain_while_the_count_is_awaited_is_not_overwritten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Asterisk delays a failed AMI login by 1 s: the count may take that long.
    async def go() -> NodeState:
        agent = make_agent()
        agent.state = NodeState.ACTIVE
        counting = asyncio.Event()
        released = asyncio.Event()

        class SlowCounter:
            last_error: str | None = None
            version: str | None = None

            async def run(self, stopping: asyncio.Event) -> None:
                return None

            async def active_calls(self) -> int | None:
                counting.set()
                await released.wait()
                return 0

        async def ok_probe(*_: object) -> ProbeResult:
            return ProbeResult(200, 1.0, None)

        monkeypatch.setattr(agent_module, "probe", ok_probe)
        agent.counter = SlowCounter()

        async def one_step() -> None:
            await agent._probe_once()
            await agent._count_once()

        step = asyncio.create_task(one_step())
        await counting.wait()
        agent.draining = True
        agent._decide(None)
        released.set()
        await step
        return agent.state

    assert asyncio.run(go()) is NodeState.DRAINING


def test_ami_trouble_is_counted_once_and_shown_in_the_record() -> None:
    from asterfleet.node.ami import AmiSession
    from asterfleet.node.calls import AmiCounter
    from tests.fake_ami import AmiUser, FakeAmi

    async def go() -> NodeAgent:
        ami = await FakeAmi({"asterfleet": AmiUser("s3cret")}).start()
        session = AmiSession("127.0.0.1", ami.port, "asterfleet", "wrong", timeout=2)
        agent = NodeAgent(make_agent().cfg, AmiCounter(session))
        task = asyncio.create_task(agent.counter.run(agent.stopping))
        try:
            for _ in range(40):  # the refusal comes after Asterisk's 1 s delay
                await agent._count_once()
                if agent.calls_error and "Authentication failed" in agent.calls_error:
                    break
                await asyncio.sleep(0.1)
            for _ in range(5):
                await agent._count_once()
        finally:
            agent.stopping.set()
            await asyncio.wait_for(task, 5)
            await ami.stop()
        return agent

    agent = asyncio.run(go())
    record = agent.record()
    assert record.active_calls is None
    assert record.calls_error is not None and "Authentication failed" in record.calls_error
    # "not connected yet", then the refusal: two changes, each counted once.
    assert agent.metrics.count_errors._value.get() == 2


@pytest.mark.parametrize(
    ("write", "stopped"), [({"reporting", "command"}, True), ({"reporting"}, False)]
)
def test_on_idle_stop_asks_asterisk_for_a_graceful_stop(write: set[str], stopped: bool) -> None:
    from asterfleet.node.ami import AmiSession
    from asterfleet.node.calls import AmiCounter
    from tests.fake_ami import AmiUser, FakeAmi

    async def go() -> tuple[bool, FakeAmi]:
        ami = await FakeAmi({"asterfleet": AmiUser("s3cret", write=write)}).start()
        session = AmiSession("127.0.0.1", ami.port, "asterfleet", "s3cret", timeout=2)
        agent = NodeAgent(make_agent().cfg, AmiCounter(session))
        task = asyncio.create_task(agent.counter.run(agent.stopping))
        try:
            for _ in range(100):
                if session.calls is not None:
                    break
                await asyncio.sleep(0.05)
            ok = await agent.stop_asterisk()
        finally:
            agent.stopping.set()
            await asyncio.wait_for(task, 5)
            await ami.stop()
        return ok, ami

    ok, ami = asyncio.run(go())
    assert ok is stopped
    assert ami.shutting_down is stopped
    assert ami.commands == (["core stop gracefully"] if stopped else [])


def test_an_unexpected_error_in_the_registration_loop_is_logged_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop that keeps the record runs supervised, as in the agent: an
    exception it does not know is logged and the loop run again (it once
    ended the loop silently, and the node never registered)."""
    from asterfleet.etcd_client import Claim
    from asterfleet.runtime.tasks import supervise

    async def go() -> tuple[int, int | None, list[str]]:
        agent = make_agent()
        calls = {"grant": 0}
        logged: list[str] = []

        async def grant(ttl: int) -> int:
            calls["grant"] += 1
            if calls["grant"] == 1:
                raise RuntimeError("a bug in the client")
            agent.stopping.set()  # registered: end the test
            return 0x42

        async def claim(*_: object) -> Claim:
            return Claim("created", 7)

        monkeypatch.setattr(agent.etcd, "grant", grant)
        monkeypatch.setattr(agent.log, "error", lambda event, **_kw: logged.append(event))
        monkeypatch.setattr(agent.etcd, "claim", claim)
        run = supervise("etcd", agent.etcd_loop, agent.stopping, agent.log, restart_after=0.01)
        await asyncio.wait_for(run, 5)
        return calls["grant"], agent.lease, logged

    assert asyncio.run(go()) == (2, 0x42, ["loop_failed"])
