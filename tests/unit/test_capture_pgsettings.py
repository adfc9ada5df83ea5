"""The capture store's PostgreSQL settings: which of a server's fall short."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from asterfleet.capture.pgsettings import CAPTURE_SETTINGS, command_line, differences

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("server", "below"),
    [
        # PostgreSQL's default: 1/32 of 128 MB of shared buffers, in 8 kB pages.
        ([("wal_buffers", "512", "8kB")], {"wal_buffers": "4MB (want 64MB)"}),
        ([("wal_buffers", "8192", "8kB")], {}),
        ([("wal_buffers", "262144", "8kB")], {}),  # more than asked
        ([("wal_buffers", "63", "MB")], {"wal_buffers": "63MB (want 64MB)"}),
        # What PostgreSQL would never report is left alone.
        ([("wal_buffers", "junk", "8kB"), ("wal_buffers", "1", "parsecs")], {}),
        ([("shared_buffers", "16384", "8kB")], {}),
    ],
)
def test_settings_below_the_capture_stores(
    server: list[tuple[str, str, str | None]], below: dict[str, str]
) -> None:
    assert differences(server) == below


def test_the_settings_keep_durability() -> None:
    for name in ("fsync", "synchronous_commit", "full_page_writes"):
        assert name not in CAPTURE_SETTINGS
    assert command_line() == ["-c", "wal_buffers=64MB"]


def test_kubernetes_runs_the_capture_database_with_them() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/base/capture.yaml").read_text()))
    (postgres,) = [
        c
        for d in docs
        if d["kind"] == "StatefulSet"
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["name"] == "postgres"
    ]
    assert postgres["args"][1:] == command_line()
