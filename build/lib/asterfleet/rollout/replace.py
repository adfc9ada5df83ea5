"""How a box is replaced: the node's replace action.

A node names its replace action in its ``replace`` label (``asterfleet node
run --label replace=...``); without one, the controller's ``--replace``
applies. Three kinds:

``command:ARGV``
    Run a command on the controller's host (``{node}``, ``{version}`` and
    ``{image}`` are filled in; also in ``ASTERFLEET_NODE``,
    ``ASTERFLEET_VERSION``, ``ASTERFLEET_IMAGE``). The usual way to drive
    podman on a host: ``command:ssh {node} podman-replace {image}``.
``systemd:UNIT``
    ``systemctl set-environment ASTERFLEET_IMAGE=… ASTERFLEET_VERSION=…``
    then ``systemctl restart UNIT`` (``{node}`` is filled in), for a unit
    whose ``ExecStart`` runs ``podman run ${ASTERFLEET_IMAGE}``.
``kubernetes:NAMESPACE/STATEFULSET/CONTAINER``
    For a StatefulSet with ``updateStrategy: OnDelete`` whose pods are the
    nodes (node id = pod name): patch the container's image in the pod
    template, then delete the node's pod; the StatefulSet recreates it from
    the new template. Uses the Kubernetes API with a bearer token.

The action only starts the replacement; the controller then waits until the
node is back with the target. Every action is safe to repeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from asterfleet.errors import AsterfleetError, UsageError
from asterfleet.rollout.model import Target

KINDS = ("command", "systemd", "kubernetes")
REPLACE_LABEL = "replace"
COMMAND_TIMEOUT = 300.0


class ReplaceFailed(AsterfleetError):
    """The replace action ran and failed."""


@dataclass(frozen=True)
class ReplaceAction:
    kind: str
    spec: str

    def describe(self) -> str:
        return f"{self.kind}:{self.spec}"


def parse_replace(text: str, where: str = "--replace") -> ReplaceAction:
    kind, sep, spec = text.partition(":")
    if not sep or kind not in KINDS or not spec.strip():
        raise UsageError(
            f"{where} {text!r} is not a replace action: use command:ARGV, systemd:UNIT or "
            "kubernetes:NAMESPACE/STATEFULSET/CONTAINER"
        )
    if kind == "kubernetes" and len(spec.split("/")) != 3:
        raise UsageError(
            f"{where} {text!r}: write kubernetes:NAMESPACE/STATEFULSET/CONTAINER "
            "(for example kubernetes:voice/asterisk/asterisk)"
        )
    if kind == "command":
        try:
            shlex.split(spec)
        except ValueError as exc:
            raise UsageError(f"{where} {text!r}: {exc}") from None
    return ReplaceAction(kind, spec.strip())


def _fill(template: str, node: str, target: Target) -> str:
    return (
        template.replace("{node}", node)
        .replace("{version}", target.version or "")
        .replace("{image}", target.image or "")
    )


def command_argv(action: ReplaceAction, node: str, target: Target) -> list[str]:
    """The argv a ``command:`` action runs (each word filled in, never a shell)."""
    return [_fill(word, node, target) for word in shlex.split(action.spec)]


def systemd_argvs(action: ReplaceAction, node: str, target: Target) -> list[list[str]]:
    env = [f"ASTERFLEET_NODE={node}"]
    if target.image:
        env.append(f"ASTERFLEET_IMAGE={target.image}")
    if target.version:
        env.append(f"ASTERFLEET_VERSION={target.version}")
    unit = _fill(action.spec, node, target)
    return [["systemctl", "set-environment", *env], ["systemctl", "restart", unit]]


@dataclass(frozen=True)
class KubeRequest:
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None


def kubernetes_requests(action: ReplaceAction, node: str, target: Target) -> list[KubeRequest]:
    """The API calls that replace ``node``'s pod with one from ``target``'s image."""
    namespace, statefulset, container = action.spec.split("/")
    out = []
    if target.image:
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": container, "image": target.image}
        ]}}}}  # fmt: skip
        out.append(
            KubeRequest(
                "PATCH",
                f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{statefulset}",
                json.dumps(patch).encode(),
                "application/strategic-merge-patch+json",
            )
        )
    out.append(KubeRequest("DELETE", f"/api/v1/namespaces/{namespace}/pods/{node}"))
    return out


@dataclass(frozen=True)
class KubeApi:
    url: str = "https://kubernetes.default.svc"
    token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    ca_file: Path | None = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


async def _run(argv: list[str], env: dict[str, str]) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise ReplaceFailed(f"cannot run {argv[0]!r}: {exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ReplaceFailed(
            f"{shlex.join(argv)} still running after {COMMAND_TIMEOUT:g}s"
        ) from None
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise ReplaceFailed(f"{shlex.join(argv)} exited {proc.returncode}: {tail[0]}")


async def _kubernetes(requests: list[KubeRequest], api: KubeApi) -> None:
    import httpx

    try:
        token = api.token_file.read_text().strip()
    except OSError as exc:
        raise ReplaceFailed(f"cannot read the Kubernetes token {api.token_file}: {exc}") from exc
    verify: bool | str = True
    if api.url.startswith("https://") and api.ca_file is not None and api.ca_file.is_file():
        verify = str(api.ca_file)
    async with httpx.AsyncClient(base_url=api.url, verify=verify, timeout=10.0) as client:
        for req in requests:
            headers = {"Authorization": f"Bearer {token}"}
            if req.content_type:
                headers["Content-Type"] = req.content_type
            resp = await client.request(req.method, req.path, content=req.body, headers=headers)
            if req.method == "DELETE" and resp.status_code == 404:
                continue  # already gone: the StatefulSet is recreating it
            if resp.status_code >= 300:
                raise ReplaceFailed(
                    f"Kubernetes answered {resp.status_code} to {req.method} {req.path}: "
                    f"{resp.text[:200]}"
                )


async def replace(
    action: ReplaceAction, node: str, target: Target, kube: KubeApi | None = None
) -> None:
    """Start replacing ``node``'s box with one running ``target``."""
    env = {
        "ASTERFLEET_NODE": node,
        "ASTERFLEET_VERSION": target.version or "",
        "ASTERFLEET_IMAGE": target.image or "",
    }
    if action.kind == "command":
        await _run(command_argv(action, node, target), env)
    elif action.kind == "systemd":
        for argv in systemd_argvs(action, node, target):
            await _run(argv, env)
    else:
        await _kubernetes(kubernetes_requests(action, node, target), kube or KubeApi())
