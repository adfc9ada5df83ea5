"""deploy/monitoring: promtool accepts the alert rules, and every metric a rule
or a dashboard panel reads is one the code really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy/monitoring"
_NAME = re.compile(r"\basterfleet_[a-z0-9_]+")
# How prometheus_client exposes counters and histograms.
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def defined_metrics() -> set[str]:
    """Names passed to Counter/Gauge/Histogram/…MetricFamily in the code."""
    found: set[str] = set()
    definition = re.compile(
        r"(?:Counter|Gauge|Histogram|Summary|CounterMetricFamily|GaugeMetricFamily)\(\s*"
        r"\"(asterfleet_[a-z0-9_]+)\""
    )
    for path in (REPO / "src/asterfleet").rglob("*.py"):
        found.update(definition.findall(path.read_text()))
    return found


def exported(name: str, defined: set[str]) -> bool:
    if name in defined:
        return True
    return any(name.endswith(s) and name[: -len(s)] in defined for s in _SUFFIXES)


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def panel_expressions() -> dict[str, list[str]]:
    out = {}
    for path in sorted((MONITORING / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        out[path.stem] = [t["expr"] for p in board["panels"] for t in p["targets"]]
    return out


def test_the_code_defines_the_metrics_this_test_relies_on() -> None:
    defined = defined_metrics()
    assert {
        "asterfleet_node_state",
        "asterfleet_balancer_nodes",
        "asterfleet_capture_dropped",
    } <= defined


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    done = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alerts_an_operator_needs_are_there() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "BalancerDisagreesWithEtcd",
        "NodeUnhealthy",
        "FleetBelowMinimumRoutableNodes",
        "CaptureDropping",
    } <= names


def test_every_alert_reads_metrics_the_code_exports() -> None:
    defined = defined_metrics()
    for expr in rule_expressions():
        names = _NAME.findall(expr)
        assert names, f"alert without an asterfleet metric: {expr}"
        unknown = [n for n in names if not exported(n, defined)]
        assert not unknown, f"{unknown} in {expr!r} is not exported by asterfleet"


def test_every_dashboard_panel_reads_metrics_the_code_exports() -> None:
    defined = defined_metrics()
    boards = panel_expressions()
    assert set(boards) == {"fleet", "balancers", "capture"}
    for board, exprs in boards.items():
        assert exprs, board
        for expr in exprs:
            names = _NAME.findall(expr)
            assert names, f"{board}: panel without an asterfleet metric: {expr}"
            unknown = [n for n in names if not exported(n, defined)]
            assert not unknown, f"{board}: {unknown} is not exported by asterfleet"


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    """`promtool check config` of the Prometheus on this machine (Debian's,
    built without Kubernetes discovery), installed as an operator would:
    the rules and the console's token file beside it."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(MONITORING / name, tmp_path / name)
    (tmp_path / "asterfleet-console.token").write_text("aft_scrape\n")
    (tmp_path / "asterfleet-metrics.token").write_text("balancer-scrape\n")
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid prometheus config file syntax" in done.stdout
    assert "SUCCESS: 1 rule files found" in done.stdout


def _srv_names(job: dict[str, object]) -> set[str]:
    return {name for sd in job["dns_sd_configs"] for name in sd["names"]}  # type: ignore[attr-defined]


def _srv_names_or_none(job: dict[str, object]) -> set[str]:
    return _srv_names(job) if "dns_sd_configs" in job else set()


def test_prometheus_finds_every_metrics_port_of_the_kubernetes_manifests() -> None:
    """Each metrics port of the manifests is in a headless Service that lists
    Pods Ready or not (a draining box is not Ready), and its SRV name is in
    the scrape config: the Asterisk config follower's 9102 too."""
    from tests.deploy.test_kubernetes_manifests import render

    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    scraped = set().union(*(_srv_names(j) for j in jobs.values() if "dns_sd_configs" in j))
    docs = render("production")
    services = [d for d in docs if d["kind"] == "Service"]
    found = set()
    for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = [
            p
            for c in workload["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports") or []
            if p["name"].endswith("metrics")
        ]
        for port in ports:
            names = {
                f"_{sp['name']}._tcp.{svc['metadata']['name']}.asterfleet.svc"
                for svc in services
                if svc["spec"].get("clusterIP") == "None"
                and svc["spec"].get("publishNotReadyAddresses") is True
                and all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
                for sp in svc["spec"]["ports"]
                if sp.get("targetPort") == port["name"]
            }
            assert names & scraped, (workload["metadata"]["name"], port, names)
            found.add(port["containerPort"])
    assert {9101, 9102, 9103, 2381} <= found
    # The balancers' listener (hostNetwork: beyond NetworkPolicies) answers
    # only a bearer token: the job that finds it sends one.
    balancers = [
        j for j in jobs.values()
        if "_metrics._tcp.kamailio-lb-metrics.asterfleet.svc" in _srv_names_or_none(j)
    ]  # fmt: skip
    assert len(balancers) == 1
    assert balancers[0]["authorization"]["credentials_file"] == "asterfleet-metrics.token"
    hosts = next(
        j for j in jobs.values()
        for sc in j.get("static_configs", []) if "lb1.example.net:9102" in sc["targets"]
    )  # fmt: skip
    assert hosts["authorization"]["credentials_file"] == "asterfleet-metrics.token"
    # The console, with its token, through its own Service's named port.
    console = next(s for s in services if s["metadata"]["name"] == "console")
    assert any(p["name"] == "http" for p in console["spec"]["ports"])
    assert _srv_names(jobs["asterfleet-console"]) == {"_http._tcp.console.asterfleet.svc"}


def test_scrape_config_loads_the_alert_rules() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert {"asterfleet", "asterfleet-console", "asterfleet-hosts"} <= jobs
    # The console's /metrics needs a token (scope `metrics`).
    [console] = [j for j in config["scrape_configs"] if j["job_name"] == "asterfleet-console"]
    assert console["authorization"]["type"] == "Bearer"
    assert console["authorization"]["credentials_file"]


def test_the_vip_alert_fires_for_no_holder_and_two_holders_only(tmp_path: Path) -> None:
    """promtool test rules: one holder is quiet; none, or two, fire after 15 s."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    vip = '{vip="10.0.0.100", instance="%s"}'
    tests = {
        "rule_files": [str(MONITORING / "alerts.yml")],
        "evaluation_interval": "5s",
        "tests": [
            {
                "interval": "5s",
                # lb1 holds it; from minute 1 nobody; from minute 2 both.
                "input_series": [
                    {"series": "asterfleet_balancer_vip_held" + vip % "lb1",
                     "values": "1x11 0x11 1x11"},
                    {"series": "asterfleet_balancer_vip_held" + vip % "lb2",
                     "values": "0x11 0x11 1x11"},
                ],
                "alert_rule_test": [
                    {"eval_time": "50s", "alertname": "VipHoldersNotOne", "exp_alerts": []},
                    # 5 s after the VIP vanished: a move in progress, no alert yet.
                    {"eval_time": "65s", "alertname": "VipHoldersNotOne", "exp_alerts": []},
                    {"eval_time": "110s", "alertname": "VipHoldersNotOne", "exp_alerts": [
                        {"exp_labels": {"vip": "10.0.0.100", "severity": "critical"},
                         "exp_annotations": _vip_annotations("0")}]},
                    {"eval_time": "170s", "alertname": "VipHoldersNotOne", "exp_alerts": [
                        {"exp_labels": {"vip": "10.0.0.100", "severity": "critical"},
                         "exp_annotations": _vip_annotations("2")}]},
                ],
            }
        ],
    }  # fmt: skip
    path = tmp_path / "vip_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _vip_annotations(holders: str) -> dict[str, str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "VipHoldersNotOne"]
    return {
        "summary": f"Virtual IP 10.0.0.100 has {holders} holders (must be 1)",
        "description": rule["annotations"]["description"],
    }
