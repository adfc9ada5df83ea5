"""How the member tools (doctor, rejoin, discovery) reach etcd, with the TLS
and user of the command (``@etcd_options``: the same
:class:`~asterfleet.etcd_client.EtcdSecurity` every other etcd command uses).

- v3 calls go over etcd's gRPC API through the generated stubs, one call at
  a time with its own deadline: a dead member costs one bounded attempt.
  The replies are turned into the JSON etcd's gateway would give (the same
  field names, 64-bit ids as decimal strings), so the response header
  (``cluster_id``, ``member_id`` of the member that answered) is kept.
  Not the JSON gateway itself: under ``--client-cert-auth`` etcd refuses
  gateway requests whose client certificate has a common name ("CommonName
  of client sending a request against gateway will be ignored"), which is
  every certificate ``etcd secure`` users log in with.
- A user: one ``Authenticate`` per endpoint, its token sent with each call;
  an etcd without auth needs none. Membership changes need root.
- The v2 keys API (discovery tokens) is plain HTTP(S), with the client
  certificate, and HTTP basic authentication for a user (how v2 takes one).
- TLS: endpoints given as HOST:PORT are https (TLS) when a CA or client
  certificate is given.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import TYPE_CHECKING, Any

import httpx

from asterfleet.errors import AsterfleetError, EtcdUnavailable, UsageError

if TYPE_CHECKING:  # etcd_client loads gRPC: a command pays for it only when it calls
    import grpc

    from asterfleet.etcd_client import EtcdSecurity


class EtcdRequestError(AsterfleetError):
    """etcd answered a request with an error (e.g. "unhealthy cluster")."""

    def __init__(self, endpoint: str, path: str, message: str) -> None:
        super().__init__(f"etcd at {endpoint} refused {path}: {message}")
        self.endpoint = endpoint
        self.path = path
        self.message = message


# path (as in the JSON gateway and etcd's docs) -> (service, method, request type)
CALLS = {
    "/v3/maintenance/status": ("Maintenance", "Status", "StatusRequest"),
    "/v3/maintenance/alarm": ("Maintenance", "Alarm", "AlarmRequest"),
    "/v3/cluster/member/list": ("Cluster", "MemberList", "MemberListRequest"),
    "/v3/cluster/member/add": ("Cluster", "MemberAdd", "MemberAddRequest"),
    "/v3/cluster/member/remove": ("Cluster", "MemberRemove", "MemberRemoveRequest"),
    "/v3/kv/put": ("KV", "Put", "PutRequest"),
    "/v3/kv/range": ("KV", "Range", "RangeRequest"),
}
_TLS_WORDS = ("SSL", "TLS", "CERTIFICATE", "certificate", "handshake")


def tls_context(security: EtcdSecurity) -> ssl.SSLContext:
    """An SSL context (for HTTP) from the command's CA and client certificate."""
    try:
        context = ssl.create_default_context(
            cafile=str(security.cacert) if security.cacert else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--etcd-cacert {security.cacert}: not a usable CA file: {exc}") from None
    if security.cert is not None and security.key is not None:
        try:
            context.load_cert_chain(str(security.cert), str(security.key))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"--etcd-cert {security.cert} / --etcd-key {security.key}: cannot load them: {exc}"
            ) from None
    return context


def unreachable(url: str, text: str, tls: bool) -> EtcdUnavailable:
    """One line for a request that got no answer; TLS trouble named as such."""
    if any(word in text for word in _TLS_WORDS):
        return EtcdUnavailable(
            f"etcd at {url}: the TLS handshake failed ({text}): check --etcd-cacert, "
            "--etcd-cert and --etcd-key"
        )
    if not tls and ("Socket closed" in text or "RemoteProtocolError" in text):
        return EtcdUnavailable(
            f"etcd at {url} does not answer without TLS ({text}): give --etcd-cacert "
            "(and --etcd-cert/--etcd-key)"
        )
    return EtcdUnavailable(f"etcd at {url} does not answer: {text}")


class Transport:
    """One command's connections to etcd members, with its TLS and user."""

    def __init__(self, security: EtcdSecurity | None = None, timeout: float = 2.0) -> None:
        self.security = security
        self.tls = security is not None and security.tls
        self.user = security.user if security is not None else None
        self.timeout = timeout
        self._tokens: dict[str, str | None] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    # -- v3 over gRPC ----------------------------------------------------------

    def _channel(self, url: str) -> grpc.Channel:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no gRPC chatter on stderr
        import grpc

        target = url.partition("://")[2]
        with self._lock:
            channel = self._channels.get(target)
            if channel is None:
                if self.security is not None and self.tls:
                    channel = grpc.secure_channel(target, self.security.credentials())
                else:
                    channel = grpc.insecure_channel(target)
                self._channels[target] = channel
            return channel

    def _invoke(
        self, url: str, path: str, body: dict[str, Any], metadata: list[tuple[str, str]]
    ) -> dict[str, Any]:
        import grpc
        from aetcd.rpc import rpc_pb2, rpc_pb2_grpc
        from google.protobuf import json_format  # type: ignore[import-untyped]

        service, method, request_type = CALLS.get(path) or (
            ("Auth", "Authenticate", "AuthenticateRequest")
            if path == "/v3/auth/authenticate"
            else (None, None, None)
        )
        if service is None or method is None or request_type is None:
            raise ValueError(f"no etcd call {path}")
        stub = getattr(rpc_pb2_grpc, f"{service}Stub")(self._channel(url))
        request = json_format.ParseDict(body, getattr(rpc_pb2, request_type)())
        try:
            reply = getattr(stub, method)(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code, details = exc.code(), str(exc.details() or exc.code())
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise unreachable(url, details, self.tls) from None
            raise EtcdRequestError(url, path, details) from None
        data: dict[str, Any] = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        return data

    def call(self, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One v3 call to the member at ``url``; its reply as etcd's JSON."""
        return self._invoke(url, path, body, self._metadata(url))

    def _metadata(self, url: str) -> list[tuple[str, str]]:
        if self.user is None:
            return []
        with self._lock:
            known = url in self._tokens
        if not known:
            token = self._authenticate(url)
            with self._lock:
                self._tokens[url] = token
        token = self._tokens[url]
        return [("token", token)] if token else []

    def _authenticate(self, url: str) -> str | None:
        password = (self.security.password if self.security is not None else None) or ""
        try:
            reply = self._invoke(
                url, "/v3/auth/authenticate", {"name": self.user, "password": password}, []
            )
        except EtcdRequestError as exc:
            if "authentication is not enabled" in exc.message:
                return None  # an open etcd: the user is not needed
            raise EtcdRequestError(
                url, "authentication", f"{exc.message} (user {self.user!r})"
            ) from None
        return str(reply.get("token") or "") or None

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    # -- v2 over HTTP (discovery) ------------------------------------------------

    def v2(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A v2 keys API request; EtcdUnavailable (one line) when nothing answers."""
        if self.user is not None:
            password = (self.security.password if self.security is not None else None) or ""
            kwargs["auth"] = (self.user, password)
        verify: ssl.SSLContext | bool = True
        if self.security is not None and self.tls:
            verify = tls_context(self.security)
        try:
            return httpx.request(method, url, timeout=self.timeout, verify=verify, **kwargs)
        except httpx.HTTPError as exc:
            text = f"{type(exc).__name__}: {exc}"
            raise unreachable(url.split("/v2/", 1)[0], text, self.tls) from exc
