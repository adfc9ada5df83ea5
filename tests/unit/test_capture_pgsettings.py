"""The capture store's PostgreSQL settings: which of a server's fall short."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from asterfleet.capture.pgsettings import CAPTURE_SETTINGS, command_line, differences

ROOT = Path(__file__).resolve().parents[2]

STOCK = [
    ("checkpoint_timeout", "300", "s"),
    ("max_wal_size", "1024", "MB"),
    ("wal_compression", "off", None),
]
OURS = [
    ("checkpoint_timeout", "900", "s"),
    ("max_wal_size", "16384", "MB"),
    ("wal_compression", "lz4", None),
]


@pytest.mark.parametrize(
    ("server", "below"),
    [
        (STOCK, {"checkpoint_timeout", "max_wal_size", "wal_compression"}),
        (OURS, set()),
        # More than we ask for is fine, any compression is fine.
        ([("checkpoint_timeout", "3600", "s"), ("max_wal_size", "65536", "MB")], set()),
        ([("wal_compression", "pglz", None), ("wal_compression", "zstd", None)], set()),
        ([("max_wal_size", "8192", "MB")], {"max_wal_size"}),
        # Units PostgreSQL may report, and values it would never give.
        ([("checkpoint_timeout", "14", "min")], {"checkpoint_timeout"}),
        ([("max_wal_size", "junk", "MB"), ("checkpoint_timeout", "1", "parsecs")], set()),
        ([("shared_buffers", "16384", "8kB")], set()),
    ],
)
def test_settings_below_the_capture_stores(
    server: list[tuple[str, str, str | None]], below: set[str]
) -> None:
    found = differences(server)
    assert set(found) == below
    for name, text in found.items():
        assert text.endswith(f"(want {CAPTURE_SETTINGS[name]})")


def test_the_settings_keep_durability() -> None:
    for name in ("fsync", "synchronous_commit", "full_page_writes"):
        assert name not in CAPTURE_SETTINGS
    assert command_line()[:2] == [
        "-c",
        f"checkpoint_timeout={CAPTURE_SETTINGS['checkpoint_timeout']}",
    ]


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
