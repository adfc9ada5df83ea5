"""deploy/kubernetes renders offline and every object is valid Kubernetes.

Schemas: kubernetes-validate (pinned in pyproject.toml), strict mode, so an
unknown or misspelt field fails too. The checks after it are the promises the
manifests make to an operator.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from asterfleet.runtime.process import require_binary
from asterfleet.ship import kube

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (REPO / "deploy/kubernetes/overlays").iterdir())
# A recent release the schemas are pinned to (kubectl here is 1.32).
K8S_VERSION = "1.32.0"


def render(overlay: str) -> list[dict[str, Any]]:
    path = REPO / "deploy/kubernetes/overlays" / overlay
    done = subprocess.run(
        [require_binary("kubectl"), "kustomize", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return kube.load_docs(done.stdout)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(str(request.param))


def test_there_is_a_production_and_a_podman_overlay() -> None:
    assert {"production", "podman"} <= set(OVERLAYS)


def test_every_rendered_object_is_valid_for_kubernetes(rendered: list[dict[str, Any]]) -> None:
    assert len(rendered) > 20
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


def _containers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["spec"]["template"]["spec"]["containers"]}


def _env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env") or []}


def test_the_boxes_drain_before_they_stop(rendered: list[dict[str, Any]]) -> None:
    box = kube.find(rendered, "StatefulSet", "asterisk")
    spec = box["spec"]["template"]["spec"]
    agent = kube.configmap_data(rendered)["node-agent"]
    drain_timeout = float(agent["ASTERFLEET_DRAIN_TIMEOUT"])
    assert spec["terminationGracePeriodSeconds"] > drain_timeout
    containers = _containers(box)
    assert set(containers) == {"asterisk", "node-agent"}
    assert "preStop" in containers["asterisk"]["lifecycle"]
    assert containers["node-agent"]["readinessProbe"]["exec"]["command"][-1] == "node-ready"
    pdb = kube.find(rendered, "PodDisruptionBudget", "asterisk")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_three_etcd_members_and_a_balancer_with_its_agent_and_keepalived(
    rendered: list[dict[str, Any]],
) -> None:
    assert kube.find(rendered, "StatefulSet", "etcd")["spec"]["replicas"] == 3
    lb = _containers(kube.find(rendered, "DaemonSet", "kamailio-lb"))
    assert set(lb) == {"kamailio", "balancer", "keepalived"}
    assert "NET_ADMIN" in lb["keepalived"]["securityContext"]["capabilities"]["add"]
    assert lb["balancer"]["securityContext"]["runAsNonRoot"] is True
    ports = {(p["containerPort"], p["protocol"]) for p in lb["kamailio"]["ports"]}
    assert {(5060, "UDP"), (5060, "TCP")} <= ports


def test_credentials_come_from_secrets(rendered: list[dict[str, Any]]) -> None:
    secrets = {d["metadata"]["name"] for d in rendered if d["kind"] == "Secret"}
    assert {"ami", "etcd-credentials", "console", "postgres", "vrrp"} <= secrets
    agent = _containers(kube.find(rendered, "StatefulSet", "asterisk"))["node-agent"]
    ami = next(e for e in agent["env"] if e["name"] == "ASTERFLEET_AMI_SECRET")
    assert ami["valueFrom"]["secretKeyRef"]["name"] == "ami"
    assert "ASTERFLEET_AMI_SECRET" in _env_names(agent)


def test_ingress_is_denied_by_default(rendered: list[dict[str, Any]]) -> None:
    deny = kube.find(rendered, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_capture_and_console_run_from_the_asterfleet_image(rendered: list[dict[str, Any]]) -> None:
    for name in ("capture", "console"):
        (container,) = _containers(kube.find(rendered, "Deployment", name)).values()
        assert container["image"].split("/")[-1].startswith("asterfleet:")
        assert container["args"][0] == name


def test_the_vrrp_password_fits_keepalived(rendered: list[dict[str, Any]]) -> None:
    # keepalived uses only 8 characters; asterfleet vip config refuses more.
    assert len(kube.secret_data(rendered)["vrrp"]["password"]) <= 8


def test_the_asterisk_box_gets_what_its_start_script_needs(rendered: list[dict[str, Any]]) -> None:
    from asterfleet.asterisk.boxconf import AMI_USER

    box = kube.find(rendered, "StatefulSet", "asterisk")
    # The rollout controller's Kubernetes replace action deletes pods itself.
    assert box["spec"]["updateStrategy"]["type"] == "OnDelete"
    asterisk = _containers(box)["asterisk"]
    env = {e["name"]: e for e in asterisk["env"]}
    # asterisk-box run renders the config: balancers from etcd (or ASTERFLEET_BALANCERS)
    # and the same AMI secret as the node agent.
    assert "ASTERFLEET_ETCD" in env or "ASTERFLEET_BALANCERS" in env
    assert env["ASTERFLEET_AMI_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "ami",
        "key": "secret",
    }
    ami = next(d for d in rendered if d["kind"] == "Secret" and d["metadata"]["name"] == "ami")
    if "stringData" in ami:
        assert ami["stringData"]["username"] == AMI_USER
    # Each balancer publishes the address the boxes identify it by.
    balancer = _containers(kube.find(rendered, "DaemonSet", "kamailio-lb"))["balancer"]
    assert "ASTERFLEET_BALANCER_SIP_ADDRESS" in _env_names(balancer)


# -- NetworkPolicies, read as the cluster reads them -----------------------------

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def _workloads(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in rendered if d["kind"] in WORKLOADS]


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels") or {}
    return labels


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels only: all these manifests use) matches ``labels``."""
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _ingress_rules(rendered: list[dict[str, Any]], pod: dict[str, str]) -> list[dict[str, Any]]:
    """Every ingress rule of every NetworkPolicy that selects a Pod with these labels."""
    return [
        rule
        for d in rendered
        if d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], pod)
        for rule in d["spec"].get("ingress") or []
    ]


def _allows_port(rule: dict[str, Any], port: dict[str, Any]) -> bool:
    ports = rule.get("ports")
    if ports is None:
        return True
    protocol = port.get("protocol", "TCP")
    return any(
        p.get("port") in (port["containerPort"], port.get("name"))
        and p.get("protocol", "TCP") == protocol
        for p in ports
    )


def _metrics_ports(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        port
        for c in workload["spec"]["template"]["spec"]["containers"]
        for port in c.get("ports") or []
        if port["name"].endswith("metrics")
    ]


def test_prometheus_may_reach_every_metrics_port(rendered: list[dict[str, Any]]) -> None:
    """Ingress is denied by default: every metrics port (the Asterisk config
    follower's 9102 too) is opened to the monitoring namespace."""
    checked = set()
    for workload in _workloads(rendered):
        pod = _pod_labels(workload)
        for port in _metrics_ports(workload):
            from_monitoring = [
                rule
                for rule in _ingress_rules(rendered, pod)
                if any(
                    peer.get("namespaceSelector", {}).get("matchLabels")
                    == {"kubernetes.io/metadata.name": "monitoring"}
                    for peer in rule.get("from") or []
                )
            ]
            assert any(_allows_port(rule, port) for rule in from_monitoring), (
                workload["metadata"]["name"],
                port,
            )
            checked.add((workload["metadata"]["name"], port["name"], port["containerPort"]))
    assert {
        ("asterisk", "metrics", 9101),
        ("asterisk", "follow-metrics", 9102),
        ("kamailio-lb", "metrics", 9102),
        ("capture", "metrics", 9103),
        ("etcd", "metrics", 2381),
    } <= checked


def _reads_etcd(workload: dict[str, Any], maps: dict[str, dict[str, str]]) -> bool:
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if "ASTERFLEET_ETCD" in _env_names(c):
            return True
        for source in c.get("envFrom") or []:
            name = source.get("configMapRef", {}).get("name")
            if "ASTERFLEET_ETCD" in maps.get(name, {}):
                return True
    return False


def test_every_part_that_reads_etcd_may_reach_it(rendered: list[dict[str, Any]]) -> None:
    etcd = kube.find(rendered, "StatefulSet", "etcd")
    client = next(
        p for c in etcd["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        if p["name"] == "client"
    )  # fmt: skip
    rules = [r for r in _ingress_rules(rendered, _pod_labels(etcd)) if _allows_port(r, client)]
    maps = kube.configmap_data(rendered)
    readers = [w for w in _workloads(rendered) if _reads_etcd(w, maps)]
    assert {w["metadata"]["name"] for w in readers} >= {"asterisk", "kamailio-lb", "capture"}
    for workload in readers:
        spec = workload["spec"]["template"]["spec"]
        if spec.get("hostNetwork"):
            # Its packets come from the node's address: an ipBlock must name it.
            allowed = any("ipBlock" in peer for r in rules for peer in r.get("from") or [])
        else:
            pod = _pod_labels(workload)
            allowed = any(
                "podSelector" in peer and _selects(peer["podSelector"], pod)
                for r in rules
                for peer in r.get("from") or []
            )
        assert allowed, f"{workload['metadata']['name']} may not reach etcd's client port"


def test_a_hung_asterisk_is_restarted_by_a_probe_its_image_has(
    rendered: list[dict[str, Any]],
) -> None:
    """The podman overlay runs the testbox in place of Asterisk: each overlay's
    probe must be a command that overlay's image carries."""
    asterisk = _containers(kube.find(rendered, "StatefulSet", "asterisk"))["asterisk"]
    image_dir = REPO / "images" / asterisk["image"].split("/")[-1].split(":")[0]
    for probe in ("startupProbe", "livenessProbe"):
        program, *args = asterisk[probe]["exec"]["command"]
        script = Path(program).name
        assert (image_dir / script).is_file(), (probe, image_dir, script)
        assert f"COPY {script} {program}" in (image_dir / "Containerfile").read_text()
        # The script answers that subcommand (a `case` branch of its own).
        branch = re.compile(rf"^\s*{re.escape(args[0])}\)$", re.MULTILINE)
        assert branch.search((image_dir / script).read_text()), (script, args)
    assert asterisk["livenessProbe"]["timeoutSeconds"] >= 2


def test_a_host_network_metrics_port_answers_only_prometheus(
    rendered: list[dict[str, Any]],
) -> None:
    """No NetworkPolicy applies to a hostNetwork Pod (the balancers): its
    metrics listener is on the edge node's address, which callers reach.
    So it listens on the node's address only (not 0.0.0.0, which takes in
    the VIP) and answers only the bearer token of a Secret it mounts."""
    checked = set()
    host_network = set()
    for workload in _workloads(rendered):
        spec = workload["spec"]["template"]["spec"]
        if not spec.get("hostNetwork"):
            continue
        host_network.add(workload["metadata"]["name"])
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in spec["containers"]:
            if not any(p["name"].endswith("metrics") for p in c.get("ports") or []):
                continue
            env = {e["name"]: e for e in c.get("env") or []}
            assert env["ASTERFLEET_METRICS_LISTEN"]["value"].startswith("$(POD_IP):")
            assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
            # $(POD_IP) expands only from a variable defined before it.
            names = [e["name"] for e in c["env"]]
            assert names.index("POD_IP") < names.index("ASTERFLEET_METRICS_LISTEN")
            token_file = Path(env["ASTERFLEET_METRICS_TOKEN_FILE"]["value"])
            mount = next(
                m for m in c.get("volumeMounts") or [] if Path(m["mountPath"]) == token_file.parent
            )
            secret = kube.find(rendered, "Secret", volumes[mount["name"]]["secret"]["secretName"])
            assert token_file.name in {**secret.get("data", {}), **secret.get("stringData", {})}
            checked.add((workload["metadata"]["name"], c["name"]))
    # Every hostNetwork part has a metrics listener (the podman overlay has none).
    assert {name for name, _ in checked} == host_network
    assert not host_network or ("kamailio-lb", "balancer") in checked


def test_the_balancers_and_the_boxes_send_hep_to_the_capture_service() -> None:
    """Both ends of every hop send HEP (one message, one arrow needs both),
    and the boxes' RTCP reports too: to the capture Service's HEP port,
    which the capture Pod listens on and its NetworkPolicy lets them reach.
    The podman overlay runs no capture Pod: its balancers are given none (not
    even a DNS query for the name may leave the test's network)."""
    rendered = render("production")
    service = kube.find(rendered, "Service", "capture")
    hep_ports = {p["port"] for p in service["spec"]["ports"] if p["name"].startswith("hep-")}
    expected = {f"capture:{port}" for port in hep_ports}
    lb = kube.find(rendered, "ConfigMap", "kamailio-lb")["data"]
    assert lb["ASTERFLEET_CAPTURE_ADDRESS"] in expected
    for name in ("kamailio", "balancer"):  # both take the ConfigMap
        refs = _containers(kube.find(rendered, "DaemonSet", "kamailio-lb"))[name]["envFrom"]
        assert {"configMapRef": {"name": "kamailio-lb"}} in refs
    asterisk = _containers(kube.find(rendered, "StatefulSet", "asterisk"))["asterisk"]
    env = {e["name"]: e.get("value") for e in asterisk["env"]}
    assert env["ASTERFLEET_CAPTURE_ADDRESS"] in expected
    listen = {
        e["name"]: e.get("value")
        for e in _containers(kube.find(rendered, "Deployment", "capture"))["capture"]["env"]
    }["ASTERFLEET_CAPTURE_LISTEN"]
    assert {f"{proto}:0.0.0.0:{port}" for proto in ("udp", "tcp") for port in hep_ports} == set(
        listen.split(",")
    )
    podman = kube.find(render("podman"), "ConfigMap", "kamailio-lb")["data"]
    assert "ASTERFLEET_CAPTURE_ADDRESS" not in podman
