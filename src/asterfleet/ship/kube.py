"""Pods for ``podman kube play`` from the rendered Kubernetes manifests.

The cluster test runs the very Pod templates of ``deploy/kubernetes`` (the
``podman`` overlay) one Pod at a time, each with a fixed address on a podman
network. Podman 4.3's ``kube play`` takes a Pod (not a StatefulSet or a
DaemonSet) and leaves some fields aside; this module fills in, per Pod, what
the Kubernetes control plane would have (pure functions, no I/O):

* the Pod itself, from the workload's ``spec.template`` (``volumeClaimTemplates``
  become ``emptyDir`` volumes);
* ``fieldRef`` ``metadata.name`` and ``status.podIP``, ``secretKeyRef`` (podman
  reads its own secret store, not Secret objects) and ``$(VAR)`` references in
  env values (podman does not expand them): written out as literal values;
* cluster DNS (``etcd-0.etcd``): ``hostAliases``;
* ``emptyDir`` volumes (and claims) become ``hostPath`` directories under
  ``volume_root``: podman 4.3 names the volume after the Pod's volume name, so
  every etcd member would share one ``data`` volume;
* ``ports`` are dropped: podman 4.3 publishes every ``containerPort`` on the
  host (as if it were a ``hostPort``), where two Pods then collide; on the
  podman network each Pod is reached at its own address anyway;
* ``restartPolicy`` may be given per Pod: podman has no "terminating" Pod,
  so under ``Always`` a node agent that drained and exited 0 on SIGTERM is
  started again and registers anew, where the kubelet would let it go
  (``OnFailure`` gives the kubelet's behaviour for a drain).

Everything else (``envFrom`` ConfigMaps, capabilities, users, probes…) goes to
podman as written.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

Doc = dict[str, Any]

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def load_docs(text: str) -> list[Doc]:
    """The documents of a multi-document YAML stream (empty ones dropped)."""
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def find(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    raise KeyError(f"no {kind} named {name!r} in the rendered manifests")


def secret_data(docs: Iterable[Doc]) -> dict[str, dict[str, str]]:
    """Every Secret's values by secret name and key (stringData and data)."""
    out: dict[str, dict[str, str]] = {}
    for doc in docs:
        if doc.get("kind") != "Secret":
            continue
        values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
        values.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        out[doc["metadata"]["name"]] = values
    return out


def configmap_data(docs: Iterable[Doc]) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: {k: str(v) for k, v in (d.get("data") or {}).items()}
        for d in docs
        if d.get("kind") == "ConfigMap"
    }


def expand(value: str, known: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names replaced, others kept."""
    return _VAR_REF.sub(lambda m: known.get(m.group(1), m.group(0)), value)


def resolve_env(
    container: Doc,
    *,
    pod_name: str,
    pod_ip: str,
    secrets: Mapping[str, Mapping[str, str]],
    configmaps: Mapping[str, Mapping[str, str]],
) -> list[Doc]:
    """The container's env with fieldRef, secretKeyRef and $(VAR) written out."""
    known: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            known.update(configmaps.get(ref["name"], {}))
    fields = {"metadata.name": pod_name, "status.podIP": pod_ip}
    out: list[Doc] = []
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            value = expand(str(var["value"]), known)
        else:
            source = var.get("valueFrom") or {}
            if "fieldRef" in source:
                value = fields[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = secrets[ref["name"]][ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = configmaps[ref["name"]][ref["key"]]
            else:
                raise ValueError(f"env {name}: unsupported valueFrom {sorted(source)}")
        known[name] = value
        out.append({"name": name, "value": value})
    return out


def pod_from_workload(
    docs: list[Doc],
    kind: str,
    workload: str,
    *,
    pod_name: str,
    logical_name: str,
    pod_ip: str,
    volume_root: str,
    host_aliases: Mapping[str, str] | None = None,
    restart_policy: str | None = None,
) -> Doc:
    """A Pod from a workload's template, ready for ``podman kube play``.

    ``logical_name`` is the name Kubernetes would give the Pod (``etcd-0``):
    it is the host name and what ``metadata.name`` resolves to in env, while
    ``pod_name`` is podman's (prefixed) name for it. Its volumes are
    directories ``volume_root/pod_name/VOLUME`` (the caller creates them).
    """
    source = find(docs, kind, workload)
    template = copy.deepcopy(source["spec"]["template"])
    spec = template["spec"]
    for claim in source["spec"].get("volumeClaimTemplates") or []:
        spec.setdefault("volumes", []).append({"name": claim["metadata"]["name"], "emptyDir": {}})
    for volume in spec.get("volumes") or []:
        if "emptyDir" in volume:
            del volume["emptyDir"]
            path = f"{volume_root}/{pod_name}/{volume['name']}"
            volume["hostPath"] = {"path": path, "type": "DirectoryOrCreate"}
    secrets, configmaps = secret_data(docs), configmap_data(docs)
    for container in spec["containers"]:
        container.pop("ports", None)
        container["env"] = resolve_env(
            container,
            pod_name=logical_name,
            pod_ip=pod_ip,
            secrets=secrets,
            configmaps=configmaps,
        )
    spec["hostname"] = logical_name
    if restart_policy is not None:
        if restart_policy not in ("Always", "OnFailure", "Never"):
            raise ValueError(f"restartPolicy {restart_policy!r}: use Always, OnFailure or Never")
        spec["restartPolicy"] = restart_policy
    if host_aliases:
        by_ip: dict[str, list[str]] = {}
        for host, ip in sorted(host_aliases.items()):
            by_ip.setdefault(ip, []).append(host)
        spec["hostAliases"] = [{"ip": ip, "hostnames": names} for ip, names in by_ip.items()]
    labels = dict(template.get("metadata", {}).get("labels") or {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "labels": labels},
        "spec": spec,
    }


def host_paths(pod: Doc) -> list[str]:
    """The host directories a Pod's volumes use."""
    return [v["hostPath"]["path"] for v in pod["spec"].get("volumes") or [] if "hostPath" in v]


def play_yaml(docs: list[Doc], pod: Doc) -> str:
    """The YAML handed to ``podman kube play``: the ConfigMaps the Pod reads, then the Pod."""
    wanted = {
        src["configMapRef"]["name"]
        for c in pod["spec"]["containers"]
        for src in c.get("envFrom") or []
        if "configMapRef" in src
    }
    maps = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] in wanted]
    return yaml.safe_dump_all([*maps, pod], sort_keys=False)
