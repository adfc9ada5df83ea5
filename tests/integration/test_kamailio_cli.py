"""`asterfleet kamailio config` writes a file that Kamailio itself accepts."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("algorithm", ["weight", "least-calls", "round-robin"])
def test_kamailio_accepts_the_rendered_config(tmp_path: Path, algorithm: str) -> None:
    run = Path(tempfile.mkdtemp(prefix="af-"))
    out = tmp_path / "kamailio.cfg"
    (tmp_path / "dispatcher.list").write_text("")
    made = subprocess.run(
        [
            sys.executable, "-m", "asterfleet", "kamailio", "config",
            "--out", str(out),
            "--listen", "udp:127.0.0.1:15060", "--listen", "tcp:127.0.0.1:15060",
            "--list-file", str(tmp_path / "dispatcher.list"),
            "--rpc-socket", str(run / "rpc.sock"),
            "--runtime-dir", str(run),
            "--algorithm", algorithm,
            "--capture", "127.0.0.1:9060",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    text = out.read_text()
    assert "record_route" in text and "ds_select_dst" in text and "failure_route" in text
    checked = subprocess.run(
        ["kamailio", "-c", "-f", str(out)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
