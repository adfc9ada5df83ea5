"""Real Kamailio sends HEP of real SIPp calls through the balancer; the
capture server stores them, search finds them, the ladder has the right
hosts and order, and tshark reads the exported PCAP."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.capture.ladder import build_ladder, render_svg
from asterfleet.capture.search import call_messages
from asterfleet.capture.store import Store
from asterfleet.kamailio.config import KamailioConfig, resolve_capture
from asterfleet.kamailio.server import KamailioServer
from asterfleet.runtime.ports import free_port_both
from asterfleet.runtime.process import require_binary, wait_for
from asterfleet.sipp.runner import SippUac, SippUas
from tests.integration.test_capture_collector import CaptureServer

pytestmark = pytest.mark.integration

CALLS = 3


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="af-cap-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_calls_through_the_balancer_are_captured(tmp_path: Path, short_dir: Path) -> None:
    tshark = require_binary("tshark")
    capture = CaptureServer(tmp_path / "capture")
    uas = SippUas(tmp_path / "uas", name="uas")
    lb_port = free_port_both()
    cfg = KamailioConfig(
        list_file=tmp_path / "dispatcher.list",
        rpc_socket=short_dir / "rpc.sock",
        runtime_dir=short_dir,
        listen=[f"udp:127.0.0.1:{lb_port}"],
        # By name, as the Kubernetes manifests give it (capture:9060): resolved
        # when the config is rendered, since Kamailio's resolver would not.
        capture=resolve_capture(f"localhost:{capture.port}"),
        capture_id=42,
    )
    kamailio = KamailioServer(cfg, tmp_path / "kamailio")
    uac: SippUac | None = None
    try:
        capture.start()
        uas.start()
        cfg.list_file.write_text(f"1 sip:127.0.0.1:{uas.port} 0 0 weight=100\n")
        kamailio.start()
        uac = SippUac(
            tmp_path / "uac", "127.0.0.1", lb_port, rate=5, hold_ms=200, max_calls=CALLS
        ).start()
        assert uac.wait(timeout=60) == 0, uac.log_tail()

        def invites_done() -> list[dict[str, object]] | None:
            out = capture.cli("search", "--method", "INVITE", "--json")
            calls = json.loads(out.stdout) if out.returncode == 0 else []
            finished = [c for c in calls if c["final_status"] == 200 and c["messages"] >= 14]
            return calls if len(finished) == CALLS else None

        found = wait_for(invites_done, timeout=30, what=f"{CALLS} captured calls")
        assert isinstance(found, list)
        uac_host, lb, uas_host = (
            f"127.0.0.1:{uac.port}",
            f"127.0.0.1:{lb_port}",
            f"127.0.0.1:{uas.port}",
        )
        for call in found:
            assert call["node"] == uas_host
            assert call["capture_hosts"] == ["42"]

        store = Store(capture.db, create=False)
        try:
            msgs = call_messages(store, str(found[0]["call_id"]))
        finally:
            store.close()
        ladder = build_ladder(msgs)
        assert ladder.hosts == (uac_host, lb, uas_host)
        flow = [
            (a.label.split(" ")[0], ladder.hosts[a.src], ladder.hosts[a.dst]) for a in ladder.arrows
        ]
        expected = [
            ("INVITE", uac_host, lb),
            ("INVITE", lb, uas_host),
            ("200", uas_host, lb),
            ("200", lb, uac_host),
            ("ACK", uac_host, lb),
            ("ACK", lb, uas_host),
            ("BYE", uac_host, lb),
            ("BYE", lb, uas_host),
            ("200", uas_host, lb),
            ("200", lb, uac_host),
        ]
        # Every hop of the call is there. Kamailio's workers stamp their
        # traces independently, so two hops microseconds apart (a relayed
        # 200 and the ACK it triggers) can swap; the order is checked where
        # the call itself separates the steps: setup, then (after the 200 ms
        # hold) teardown.
        assert all(step in flow for step in expected), flow
        assert flow[0] == ("INVITE", uac_host, lb), flow
        setup_done = max(flow.index(step) for step in expected[:6])
        teardown = min(flow.index(step) for step in expected[6:8])
        assert setup_done < teardown, flow
        assert all(m.transport == "udp" and m.capture_id == 42 for m in msgs)
        assert "<svg" in render_svg(ladder)

        pcap = tmp_path / "call.pcap"
        out = capture.cli("export", str(found[0]["call_id"]), "--pcap", str(pcap))
        assert out.returncode == 0, out.stderr
        shown = subprocess.run(
            [tshark, "-r", str(pcap), "-Y", "sip"], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.strip().splitlines()
        assert len(lines) == len(msgs), shown.stdout
        assert "SIP/SDP" in shown.stdout or "SIP" in lines[0]
        assert "Request: INVITE" in shown.stdout and "Status: 200 OK" in shown.stdout
    finally:
        if uac is not None:
            uac.stop()
        kamailio.stop()
        uas.stop()
        capture.stop()
