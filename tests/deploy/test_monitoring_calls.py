"""deploy/monitoring: the call-statistics alerts read the console's
asterfleet_calls_* gauges and fire on bad figures only (promtool test rules)."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.deploy.test_monitoring import MONITORING, defined_metrics


def test_the_call_statistics_have_alerts() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    calls = next(g for g in rules["groups"] if g["name"] == "asterfleet-calls")
    exprs = " ".join(r["expr"] for r in calls["rules"])
    for metric in (
        "asterfleet_calls_asr_ratio",
        "asterfleet_calls_ner_ratio",
        "asterfleet_calls_post_dial_delay_seconds",
        "asterfleet_calls_mos_mean",
    ):
        assert metric in exprs and metric in defined_metrics()


def test_the_call_statistics_alerts_fire_on_bad_figures_only() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    done = subprocess.run(
        [promtool, "test", "rules", "calls_alerts_test.yml"],
        capture_output=True, text=True, timeout=60, check=False, cwd=MONITORING,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
