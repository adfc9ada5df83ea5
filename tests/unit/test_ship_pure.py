"""The pure parts of shipping: podman settings, the Debian mirror, Pods for kube play."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from asterfleet.ship import kube
from asterfleet.ship.images import DEFAULT_MIRROR, debian_mirror, image_ref
from asterfleet.ship.podman import render_containers_conf, ulimits


@pytest.mark.parametrize(
    ("nofile", "nproc", "expected"),
    [
        (20000, 96364, (16384, 16384)),  # capped: podman 4.3 lowers its own nproc to 32768
        (1024, 4096, (1024, 4096)),  # never above the host's hard limits
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, (16384, 16384)),  # unlimited host
    ],
)
def test_ulimits_never_exceed_the_hosts_hard_limits(
    nofile: int, nproc: int, expected: tuple[int, int]
) -> None:
    assert ulimits(nofile, nproc) == expected


def test_containers_conf_names_runc_cgroupfs_and_the_limits() -> None:
    text = render_containers_conf(1024, 2048, Path("/x/net"))
    assert 'runtime = "runc"' in text
    assert 'cgroup_manager = "cgroupfs"' in text
    assert 'default_ulimits = ["nofile=1024:1024", "nproc=2048:2048"]' in text
    assert 'network_config_dir = "/x/net"' in text


DEB822 = """Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
"""


@pytest.mark.parametrize(
    ("sources", "mirror"),
    [
        (DEB822, "http://mirror.example/debian"),  # security stanza skipped, slash dropped
        ("deb http://one.example/debian bookworm main\n", "http://one.example/debian"),
        ("deb [arch=amd64] http://two.example/d bookworm main\n", "http://two.example/d"),
        ("deb http://old.example/debian bullseye main\n", DEFAULT_MIRROR),  # not bookworm
        ("", DEFAULT_MIRROR),
    ],
)
def test_debian_mirror_is_the_one_apt_uses_for_bookworm(sources: str, mirror: str) -> None:
    assert debian_mirror(sources) == mirror


def test_image_refs_are_local_and_versioned() -> None:
    assert image_ref("testbox", "1.2.3") == "localhost/asterfleet/testbox:1.2.3"


MANIFESTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: agent}
data: {ASTERFLEET_ETCD: "etcd-0.etcd:2379", PORT: "5060"}
---
apiVersion: v1
kind: Secret
metadata: {name: ami}
data: {secret: c2VrcmV0}
stringData: {username: fleet}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: box}
spec:
  template:
    metadata: {labels: {app: box}}
    spec:
      containers:
        - name: agent
          image: asterfleet/asterfleet
          ports: [{containerPort: 9101}]
          envFrom: [{configMapRef: {name: agent}}]
          env:
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: NODE, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: USER, valueFrom: {secretKeyRef: {name: ami, key: username}}}
            - {name: SECRET, valueFrom: {secretKeyRef: {name: ami, key: secret}}}
            - {name: URI, value: "sip:$(POD_IP):$(PORT);transport=udp"}
            - {name: LATER, value: "$(UNKNOWN)-$(NODE)"}
  volumeClaimTemplates:
    - metadata: {name: data}
"""


def test_a_pod_from_a_statefulset_has_what_the_control_plane_would_fill_in() -> None:
    docs = kube.load_docs(MANIFESTS)
    pod = kube.pod_from_workload(
        docs, "StatefulSet", "box", pod_name="t-box-0", logical_name="box-0",
        pod_ip="10.0.0.5", volume_root="/v",
        host_aliases={"etcd-0.etcd": "10.0.0.2", "etcd-1.etcd": "10.0.0.2"},
    )  # fmt: skip
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env == {
        "POD_IP": "10.0.0.5",  # status.podIP: podman 4.3 refuses it
        "NODE": "box-0",  # the Kubernetes name, not podman's prefixed one
        "USER": "fleet",  # stringData
        "SECRET": "sekret",  # base64 data
        "URI": "sip:10.0.0.5:5060;transport=udp",  # $(VAR) from env and from envFrom
        "LATER": "$(UNKNOWN)-box-0",  # unknown references stay as written, like Kubernetes
    }
    assert pod["metadata"] == {"name": "t-box-0", "labels": {"app": "box"}}
    assert pod["spec"]["hostname"] == "box-0"
    assert pod["spec"]["hostAliases"] == [
        {"ip": "10.0.0.2", "hostnames": ["etcd-0.etcd", "etcd-1.etcd"]}
    ]
    # One directory per Pod and volume: podman 4.3 would share an emptyDir by name.
    assert pod["spec"]["volumes"] == [
        {"name": "data", "hostPath": {"path": "/v/t-box-0/data", "type": "DirectoryOrCreate"}}
    ]
    assert kube.host_paths(pod) == ["/v/t-box-0/data"]
    assert "ports" not in pod["spec"]["containers"][0]  # podman would publish them on the host
    # The ConfigMap still goes to podman (envFrom), the Secret does not.
    played = kube.load_docs(kube.play_yaml(docs, pod))
    assert [d["kind"] for d in played] == ["ConfigMap", "Pod"]


@pytest.mark.parametrize("policy", [None, "OnFailure"])
def test_a_restart_policy_is_set_only_when_given(policy: str | None) -> None:
    docs = kube.load_docs(MANIFESTS)
    pod = kube.pod_from_workload(
        docs, "StatefulSet", "box", pod_name="t-box-0", logical_name="box-0",
        pod_ip="10.0.0.5", volume_root="/v", restart_policy=policy,
    )  # fmt: skip
    assert pod["spec"].get("restartPolicy") == policy


def test_a_bad_restart_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="restartPolicy 'Sometimes'"):
        kube.pod_from_workload(
            kube.load_docs(MANIFESTS), "StatefulSet", "box", pod_name="p", logical_name="b",
            pod_ip="10.0.0.5", volume_root="/v", restart_policy="Sometimes",
        )  # fmt: skip


def test_an_unknown_workload_is_named() -> None:
    with pytest.raises(KeyError, match="no Deployment named 'nope'"):
        kube.find(kube.load_docs(MANIFESTS), "Deployment", "nope")
