"""A JSON-RPC 2.0 client for Kamailio's ``jsonrpcs`` module.

Two transports, chosen by the target string:

- a unix datagram socket: ``/run/asterfleet/kamailio_rpc.sock`` or
  ``unix:/run/…`` (jsonrpcs ``transport`` bit 4, ``dgram_socket``). The
  client binds its own datagram socket in a private temporary directory so
  Kamailio can answer, one per call, removed afterwards. Kamailio must be
  able to write to it: run the client as the same user (or root).
- HTTP: ``http://127.0.0.1:8080/RPC`` (jsonrpcs over xhttp).

Every failure (no socket, timeout, HTTP error, JSON-RPC error) raises
:class:`RpcCallError`, an :class:`~asterfleet.errors.RpcError` naming the
method, the target and Kamailio's message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asterfleet.errors import RpcError

if TYPE_CHECKING:
    import httpx

#: Largest reply read from the datagram socket (jsonrpcs answers in one datagram).
MAX_DATAGRAM = 1 << 20

#: The error Kamailio returns for ``dispatcher.list`` when no set is loaded.
NO_DESTINATION_SETS = "No Destination Sets"

_ids = itertools.count(1)


class RpcCallError(RpcError):
    """One RPC call failed: which method, on which target, and why."""

    def __init__(self, method: str, target: str, message: str, code: int | None = None) -> None:
        detail = f"{code} {message}" if code is not None else message
        super().__init__(f"Kamailio RPC {method} on {target} failed: {detail}")
        self.method = method
        self.target = target
        self.message = message
        self.code = code


@dataclass(frozen=True)
class DispatcherDestination:
    """One destination as ``dispatcher.list`` reports it."""

    set_id: int
    uri: str
    #: Two letters: state A/I/T/D (active, inactive, trying, disabled),
    #: then P (probing) or X (not probing).
    flags: str
    priority: int
    #: Parsed from the attrs body (``duid=a;weight=50`` → strings).
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.flags[:1]

    @property
    def active(self) -> bool:
        return self.state == "A"

    @property
    def disabled(self) -> bool:
        return self.state == "D"

    @property
    def probing(self) -> bool:
        return self.flags[1:2] == "P"


def parse_attrs_body(body: str) -> dict[str, str]:
    """``duid=a;weight=50;maxload=0`` → ``{"duid": "a", ...}`` (order kept)."""
    attrs: dict[str, str] = {}
    for part in body.split(";"):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition("=")
        attrs[name.strip()] = value.strip()
    return attrs


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def parse_dispatcher_list(result: Any) -> list[DispatcherDestination]:
    """The destinations in a ``dispatcher.list`` JSON-RPC result.

    Kamailio 5.6 answers ``{"NRSETS": n, "RECORDS": [{"SET": {"ID": 1,
    "TARGETS": [{"DEST": {"URI": …, "FLAGS": "AP", "PRIORITY": 0,
    "ATTRS": {"BODY": "duid=…", "DUID": …, …}}}]}}]}``. Attributes come from
    ``ATTRS.BODY`` (older versions give ``ATTRS`` as the body string).
    Order is Kamailio's (within a set: highest priority first).
    """
    if not isinstance(result, dict):
        raise ValueError(f"dispatcher.list result is not an object: {result!r}")
    out: list[DispatcherDestination] = []
    for record in _as_list(result.get("RECORDS")):
        if not isinstance(record, dict) or not isinstance(record.get("SET"), dict):
            raise ValueError(f"dispatcher.list record without SET: {record!r}")
        dset = record["SET"]
        set_id = int(dset["ID"])
        for target in _as_list(dset.get("TARGETS")):
            dest = target.get("DEST") if isinstance(target, dict) else None
            if not isinstance(dest, dict):
                raise ValueError(f"dispatcher.list target without DEST: {target!r}")
            attrs_raw = dest.get("ATTRS")
            # 5.6 gives an object with the raw body in BODY; older versions the body.
            body = attrs_raw.get("BODY") if isinstance(attrs_raw, dict) else attrs_raw
            out.append(
                DispatcherDestination(
                    set_id=set_id,
                    uri=str(dest["URI"]),
                    flags=str(dest.get("FLAGS", "")),
                    priority=int(dest.get("PRIORITY", 0)),
                    attrs=parse_attrs_body(str(body or "")),
                )
            )
    return out


def _unix_path(target: str) -> str | None:
    """The socket path if ``target`` names a unix socket, else None."""
    if target.startswith("unix:"):
        return target[len("unix:") :]
    if target.startswith("/"):
        return target
    return None


def check_target(target: str) -> None:
    """RpcError unless ``target`` is a unix socket path or an http(s) URL."""
    if _unix_path(target) is None and not target.startswith(("http://", "https://")):
        raise RpcError(
            f"bad Kamailio RPC target {target!r}: use a unix socket path "
            "(/path/to/kamailio_rpc.sock or unix:/path) or an http://host:port/RPC URL"
        )


def _request(method: str, params: tuple[Any, ...]) -> tuple[int, bytes]:
    request_id = next(_ids)
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params:
        body["params"] = list(params)
    return request_id, json.dumps(body).encode()


def _result(method: str, target: str, raw: bytes | str, request_id: int) -> Any:
    try:
        reply = json.loads(raw)
    except ValueError:
        text = raw[:200] if isinstance(raw, str) else raw[:200].decode(errors="replace")
        raise RpcCallError(method, target, f"reply is not JSON: {text!r}") from None
    if not isinstance(reply, dict):
        raise RpcCallError(method, target, f"reply is not a JSON object: {reply!r}")
    if "error" in reply and reply["error"] is not None:
        error = reply["error"]
        if isinstance(error, dict):
            code = error.get("code")
            raise RpcCallError(
                method,
                target,
                str(error.get("message", error)),
                code if isinstance(code, int) else None,
            )
        raise RpcCallError(method, target, str(error))
    if reply.get("id") not in (request_id, None):
        raise RpcCallError(method, target, f"reply id {reply.get('id')!r} is not {request_id}")
    if "result" not in reply:
        raise RpcCallError(method, target, f"reply has neither result nor error: {reply!r}")
    return reply["result"]


class _ClientSocket:
    """A bound unix datagram socket in a private temporary directory."""

    def __init__(self, blocking: bool) -> None:
        self.dir = tempfile.mkdtemp(prefix="afrpc-")
        self.path = os.path.join(self.dir, "c.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # mkdtemp's 0700 is masked by the umask: under keepalived's 0177
            # (its scripts inherit it) the directory came out 0600, nobody
            # could bind in it, and every health check failed.
            os.chmod(self.dir, 0o700)
            self.sock.bind(self.path)
            self.sock.setblocking(blocking)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class KamailioRpc:
    """Async JSON-RPC client for one Kamailio (datagram socket or HTTP)."""

    def __init__(self, target: str | Path, timeout: float = 5.0) -> None:
        self.target = str(target)
        check_target(self.target)
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"KamailioRpc({self.target!r})"

    async def __aenter__(self) -> KamailioRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional ``params``; its result, or RpcCallError."""
        request_id, payload = _request(method, params)
        path = _unix_path(self.target)
        raw: bytes | str
        if path is not None:
            raw = await self._call_datagram(method, path, payload)
        else:
            raw = await self._call_http(method, payload)
        return _result(method, self.target, raw, request_id)

    async def _call_datagram(self, method: str, path: str, payload: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            client = _ClientSocket(blocking=False)
        except OSError as exc:
            raise RpcCallError(method, self.target, f"cannot bind a client socket: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                await loop.sock_sendto(client.sock, payload, path)
                return await loop.sock_recv(client.sock, MAX_DATAGRAM)
        except TimeoutError:
            raise RpcCallError(method, self.target, f"no reply within {self.timeout:g}s") from None
        except OSError as exc:
            raise RpcCallError(method, self.target, _os_error_text(exc)) from exc
        finally:
            client.close()

    async def _call_http(self, method: str, payload: bytes) -> str:
        # httpx (about 11 MB, 0.5 s to import) only for an HTTP target: a
        # balancer on the unix socket, as deployed, never loads it, nor does
        # keepalived's check, which starts every second within a timeout.
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._http.post(
                self.target, content=payload, headers={"Content-Type": "application/json"}
            )
        except httpx.TimeoutException:
            raise RpcCallError(method, self.target, f"no reply within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise RpcCallError(method, self.target, f"HTTP request failed: {exc}") from exc
        if response.status_code != 200 and not response.text.lstrip().startswith("{"):
            raise RpcCallError(
                method, self.target, f"HTTP {response.status_code}: {response.text[:200]!r}"
            )
        return response.text

    async def dispatcher_reload(self) -> None:
        """Re-read dispatcher.list (RpcCallError if Kamailio refuses)."""
        await self.call("dispatcher.reload")

    async def dispatcher_list(self) -> list[DispatcherDestination]:
        """Every loaded destination; [] when the list is empty."""
        try:
            result = await self.call("dispatcher.list")
        except RpcCallError as exc:
            if exc.message == NO_DESTINATION_SETS:
                return []
            raise
        try:
            return parse_dispatcher_list(result)
        except (ValueError, KeyError, TypeError) as exc:
            raise RpcCallError("dispatcher.list", self.target, f"unexpected result: {exc}") from exc

    async def uptime(self) -> int:
        """Seconds since Kamailio started (``core.uptime``)."""
        result = await self.call("core.uptime")
        try:
            return int(result["uptime"])
        except (TypeError, KeyError, ValueError):
            raise RpcCallError(
                "core.uptime", self.target, f"unexpected result: {result!r}"
            ) from None

    async def main_pid(self) -> int:
        """The pid of Kamailio's main process (``core.ps``): it changes on restart."""
        result = await self.call("core.ps")
        try:
            return int(_as_list(result)[0])
        except (TypeError, IndexError, ValueError):
            raise RpcCallError("core.ps", self.target, f"unexpected result: {result!r}") from None

    async def close(self) -> None:
        """Release the HTTP connection pool (datagram calls hold nothing)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _os_error_text(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return f"socket not there or nobody listening ({exc.strerror}): is Kamailio running?"
    return str(exc)


def call_sync(target: str | Path, method: str, *params: Any, timeout: float = 5.0) -> Any:
    """Blocking one-shot call (tests, CLI): the result, or RpcCallError."""
    target = str(target)
    check_target(target)
    request_id, payload = _request(method, params)
    path = _unix_path(target)
    if path is None:
        import httpx

        try:
            response = httpx.post(
                target,
                content=payload,
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise RpcCallError(method, target, f"HTTP request failed: {exc!r}") from exc
        return _result(method, target, response.text, request_id)
    try:
        client = _ClientSocket(blocking=True)
    except OSError as exc:
        raise RpcCallError(method, target, f"cannot bind a client socket: {exc}") from exc
    try:
        client.sock.settimeout(timeout)
        client.sock.sendto(payload, path)
        raw = client.sock.recv(MAX_DATAGRAM)
    except TimeoutError:
        raise RpcCallError(method, target, f"no reply within {timeout:g}s") from None
    except OSError as exc:
        raise RpcCallError(method, target, _os_error_text(exc)) from exc
    finally:
        client.close()
    return _result(method, target, raw, request_id)
