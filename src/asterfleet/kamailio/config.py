"""The Kamailio load-balancer configuration that asterfleet generates.

:class:`KamailioConfig` holds every knob the balancer role needs;
:func:`render_config` turns it into a complete ``kamailio.cfg`` (from the
``lb.cfg.j2`` template next to this file) and :func:`validate` rejects bad
values with a :class:`~asterfleet.errors.UsageError` that names the field.

Facts verified with Kamailio 5.6.3 on these machines:

- An EMPTY ``dispatcher.list`` (zero bytes, or only ``#`` comments) is
  accepted at startup and by ``dispatcher.reload``; new calls then get
  ``503 Service Unavailable`` and ``dispatcher.list`` answers the JSON-RPC
  error ``500 No Destination Sets``. A MISSING file makes startup fail and
  ``dispatcher.reload`` fail (``500 Reload Failed``, old list kept).
- A line whose URI does not parse is skipped (``ds_load_mode`` 0) and the
  reload still succeeds with the remaining lines.
- Flags 8 show as ``AP`` (``IP`` once a probe failed), flags 4 as ``DX``.
- Algorithm 9: Kamailio orders a set by priority (highest first) and, for
  equal priorities, in REVERSE file order. Unfilled percentage (sum < 100)
  goes to the last destination of that order; the share of a disabled or
  inactive destination goes to the next one; when the FIRST destination of
  that order has weight 0 the weighting is off and every call goes to the
  next active destination. ``weight=0`` also logs an ERROR ("weight 0 not in
  1-100 range"); leaving ``weight`` out does not.
- ``dispatcher.reload`` works with call-load tracking (``ds_hash_size`` > 0)
  in 5.6.3, although the module documentation says it is disabled.
"""

from __future__ import annotations

import functools
import glob
import ipaddress
import re
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from asterfleet.errors import UsageError

#: asterfleet's algorithm names and Kamailio's ``ds_select_dst`` numbers.
ALGORITHMS: dict[str, int] = {
    "weight": 9,
    "least-calls": 10,
    "round-robin": 4,
}

#: Kamailio's numeric log levels (``debug=``), by the names operators use.
LOG_LEVELS: dict[str, int] = {
    "alert": -5,
    "bug": -4,
    "critical": -3,
    "error": -1,
    "warning": 0,
    "notice": 1,
    "info": 2,
    "debug": 3,
}

#: Transports the generated config can listen on (no TLS module is loaded).
TRANSPORTS = ("udp", "tcp")

#: OPTIONS answers that prove a box is alive, besides 200 (always accepted).
#: 503 (Asterisk ``core stop gracefully``) and 408 (also what tm generates
#: locally on timeout) are deliberately absent; see ``ds_ping_reply_codes``.
PING_REPLY_CODES = "class=2;code=401;code=403;code=404;code=405;code=407;code=484;code=501"

#: Longest path a unix socket can have on Linux (``sun_path`` minus the NUL).
UNIX_PATH_MAX = 107

#: Call-load hash table size (power of two) used with algorithm 10.
CALL_LOAD_HASH_SIZE = 9

DEFAULT_MPATH = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# A POSIX account name (useradd's rule) or a numeric id.
_ACCOUNT = re.compile(r"^(?:[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$")
_UNSAFE_IN_STRING = re.compile(r'["\\\s]')


@functools.cache
def default_module_path() -> str:
    """Where the installed Kamailio keeps its modules.

    Looks for ``dispatcher.so`` under ``/usr/lib/*/kamailio/modules`` first,
    then asks ``kamailio -I``; falls back to the Debian amd64 path.
    """
    for candidate in sorted(glob.glob("/usr/lib/*/kamailio/modules")) + sorted(
        glob.glob("/usr/lib*/kamailio/modules")
    ):
        if Path(candidate, "dispatcher.so").is_file():
            return candidate
    try:
        out = subprocess.run(
            ["kamailio", "-I"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MPATH
    match = re.search(r"Default paths to modules:\s*(\S+)", out)
    if match:
        return match.group(1).split(":")[0]
    return DEFAULT_MPATH


@dataclass(frozen=True)
class KamailioConfig:
    """Everything the load-balancer ``kamailio.cfg`` depends on.

    Paths must be absolute: Kamailio resolves relative paths against its own
    run directory, not the caller's.
    """

    #: The ``dispatcher.list`` the balancer agent writes.
    list_file: Path
    #: The jsonrpcs unix datagram socket (at most 107 bytes long).
    rpc_socket: Path
    #: Kamailio's run directory (``-Y``): pid file, ctl socket.
    runtime_dir: Path
    #: SIP sockets, ``proto:host:port`` (udp or tcp).
    listen: Sequence[str] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    #: ``host:port`` put in Via/Record-Route instead of the listen address.
    advertise: str | None = None
    #: ``host:port`` of a TCP listener answering JSON-RPC over HTTP at /RPC.
    rpc_http: str | None = None
    #: Dispatcher set holding the Asterisk boxes.
    set_id: int = 1
    #: One of :data:`ALGORITHMS`.
    algorithm: str = "weight"
    #: Seconds between OPTIONS probes of every destination.
    probing_interval: int = 1
    #: tm: time to the first provisional reply (failover on a dead box).
    fr_timer_ms: int = 2000
    #: tm: time to the final reply of an INVITE once it is ringing.
    fr_inv_timer_ms: int = 40000
    #: SIP worker processes (per UDP socket, and for TCP).
    children: int = 4
    #: ``host:port`` of a HEP v3 collector; None loads no siptrace module.
    capture: str | None = None
    #: HEP capture agent id.
    capture_id: int = 1
    #: A name from :data:`LOG_LEVELS` or Kamailio's number.
    log_level: int | str = "info"
    #: Kamailio module directory.
    mpath: str = field(default_factory=default_module_path)
    #: Source addresses whose INVITEs may name one box in X-Asterfleet-Gate
    #: (the rollout controller's gate calls); empty turns the gate route off.
    gate_sources: Sequence[str] = ("127.0.0.1",)
    #: Bind listen addresses this host does not hold (yet): a backup balancer
    #: listens on the virtual IP before keepalived moves it here. Kamailio's
    #: ``ip_free_bind`` (IP_FREEBIND per socket), not the host-wide
    #: ``net.ipv4.ip_nonlocal_bind`` sysctl.
    free_bind: bool = False
    #: Owner of the JSON-RPC socket (``jsonrpcs`` dgram_user/dgram_group):
    #: Kamailio creates it before it drops root (``-u``), and the balancer
    #: agent must be allowed to write to it. None: whoever starts Kamailio.
    rpc_socket_user: str | None = None
    #: Group of the JSON-RPC socket [the user's name when only it is given].
    rpc_socket_group: str | None = None

    def __post_init__(self) -> None:
        # Accept lists (and str paths from loose callers) but stay hashable.
        object.__setattr__(self, "listen", tuple(self.listen))
        object.__setattr__(self, "gate_sources", tuple(self.gate_sources))
        for source in self.gate_sources:
            try:
                ipaddress.ip_address(source)
            except ValueError:
                raise UsageError(
                    f"gate source {source!r} is not an IP address (for example 127.0.0.1)"
                ) from None
        for name in ("list_file", "rpc_socket", "runtime_dir"):
            value: Any = getattr(self, name)
            if not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    @property
    def algorithm_id(self) -> int:
        """Kamailio's number for :attr:`algorithm`."""
        try:
            return ALGORITHMS[self.algorithm]
        except KeyError:
            raise UsageError(_unknown_algorithm(self.algorithm)) from None

    @property
    def log_level_id(self) -> int:
        """Kamailio's number for :attr:`log_level`."""
        if isinstance(self.log_level, int):
            return self.log_level
        try:
            return LOG_LEVELS[self.log_level.lower()]
        except KeyError:
            raise UsageError(
                f"unknown Kamailio log level {self.log_level!r}: use one of "
                f"{', '.join(LOG_LEVELS)} or a number from -5 to 3"
            ) from None

    @property
    def ctl_socket(self) -> Path:
        """The binrpc socket for ``kamcmd -s unix:PATH`` (inside runtime_dir)."""
        return self.runtime_dir / "kamailio_ctl"

    @property
    def pid_file(self) -> Path:
        """Where ``-P`` should put the pid file (inside runtime_dir)."""
        return self.runtime_dir / "kamailio.pid"

    @property
    def rpc_socket_owner(self) -> tuple[str, str] | None:
        """(user, group) that should own the JSON-RPC socket, or None."""
        if self.rpc_socket_user is None:
            return None
        return self.rpc_socket_user, self.rpc_socket_group or self.rpc_socket_user

    @property
    def call_load(self) -> bool:
        """True when the algorithm tracks calls per destination (alg 10)."""
        return self.algorithm == "least-calls"


def _unknown_algorithm(name: str) -> str:
    return f"unknown dispatcher algorithm {name!r}: use one of {', '.join(ALGORITHMS)}"


class NameNotResolved(UsageError):
    """A host name that does not resolve (to any address)."""


def resolve_capture(address: str) -> str:
    """``host:port`` for siptrace, its host an address: a name is resolved
    here, once, when the config is rendered (Kubernetes' ``capture:9060``:
    a Service's cluster IP stays while the Service does).

    Kamailio's own resolver does not read ``/etc/hosts`` (measured with
    Kamailio 5.6: ``sip:localhost:9060`` as the duplicate URI gave "could
    not resolve hostname" for every message, and nothing was captured).
    UsageError when ``address`` is not ``host:port``; NameNotResolved when
    the name does not resolve. An IPv4 address is preferred when a name has
    both.
    """
    host, port = _parse_host_port(address, "--capture")
    if address.startswith("["):
        return address
    try:
        ipaddress.IPv4Address(host)
        return address
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise NameNotResolved(f"--capture {address!r}: cannot resolve {host!r} ({exc})") from None
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
    if v4:
        return f"{v4[0]}:{port}"
    if v6:
        return f"[{v6[0]}]:{port}"
    raise NameNotResolved(f"--capture {address!r}: {host!r} has no IPv4 or IPv6 address")


def _parse_host_port(value: str, what: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too) or raise UsageError."""
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise UsageError(f"{what} {value!r}: expected [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"{what} {value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise UsageError(f"{what} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:5060")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME.match(host):
                raise UsageError(
                    f"{what} {value!r}: {host!r} is not a host name or IPv4 "
                    "address (write IPv6 as [addr]:port)"
                ) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"{what} {value!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def parse_socket(value: str, what: str = "listen socket") -> tuple[str, str, int]:
    """``udp:127.0.0.1:5060`` → ``("udp", "127.0.0.1", 5060)`` or UsageError."""
    proto, sep, rest = value.partition(":")
    if not sep or proto.lower() not in TRANSPORTS:
        raise UsageError(
            f"{what} {value!r}: expected PROTO:HOST:PORT with PROTO one of "
            f"{', '.join(TRANSPORTS)}, e.g. udp:127.0.0.1:5060"
        )
    host, port = _parse_host_port(rest, f"{what} {value!r}:")
    return proto.lower(), host, port


def listen_addresses(listen: str) -> tuple[str, ...]:
    """The IP addresses a Kamailio listen list (``udp:10.0.0.2:5060
    tcp:10.0.0.2:5060``, space or comma separated) sends SIP from, each
    once; host names and wildcards (0.0.0.0, ::) are left out because an
    Asterisk box cannot identify a balancer by them."""
    found: list[str] = []
    for token in listen.replace(",", " ").split():
        _, host, _ = parse_socket(token, "ASTERFLEET_SIP_LISTEN socket")
        host = host.strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not address.is_unspecified and host not in found:
            found.append(host)
    return tuple(found)


def _check_path(path: Path, what: str, unix_socket: bool = False) -> None:
    text = str(path)
    if not path.is_absolute():
        raise UsageError(f"{what} {text!r} must be an absolute path")
    if _UNSAFE_IN_STRING.search(text):
        raise UsageError(f"{what} {text!r} must not contain spaces, quotes or backslashes")
    if unix_socket and len(text.encode()) > UNIX_PATH_MAX:
        raise UsageError(
            f"{what} {text!r} is {len(text.encode())} bytes long; unix socket paths "
            f"are limited to {UNIX_PATH_MAX}: use a shorter directory"
        )


def _check_int(value: object, what: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{what} must be an integer from {low} to {high}, not {value!r}")


def validate(cfg: KamailioConfig) -> None:
    """Raise UsageError naming the first bad value in ``cfg``."""
    if cfg.algorithm not in ALGORITHMS:
        raise UsageError(_unknown_algorithm(cfg.algorithm))
    if not cfg.listen:
        raise UsageError("at least one listen socket is needed, e.g. udp:127.0.0.1:5060")
    seen: set[tuple[str, str, int]] = set()
    for sock in cfg.listen:
        parsed = parse_socket(sock)
        if parsed in seen:
            raise UsageError(f"listen socket {sock!r} is given twice")
        seen.add(parsed)
    if cfg.advertise is not None:
        _parse_host_port(cfg.advertise, "advertise address")
    if cfg.rpc_http is not None:
        host, port = _parse_host_port(cfg.rpc_http, "rpc_http address")
        if ("tcp", host, port) in seen:
            raise UsageError(
                f"rpc_http address {cfg.rpc_http!r} is also a SIP tcp listen socket: "
                "use another port"
            )
    if cfg.capture is not None:
        _parse_host_port(cfg.capture, "capture address")
    _check_int(cfg.set_id, "set_id", 0, 2**31 - 1)
    _check_int(cfg.probing_interval, "probing_interval (seconds)", 1, 3600)
    _check_int(cfg.fr_timer_ms, "fr_timer_ms", 100, 600_000)
    _check_int(cfg.fr_inv_timer_ms, "fr_inv_timer_ms", cfg.fr_timer_ms, 3_600_000)
    _check_int(cfg.children, "children", 1, 256)
    _check_int(cfg.capture_id, "capture_id", 0, 2**32 - 1)
    level = cfg.log_level_id
    _check_int(level, "log_level", -5, 3)
    _check_path(cfg.list_file, "list_file")
    _check_path(cfg.runtime_dir, "runtime_dir")
    _check_path(cfg.rpc_socket, "rpc_socket", unix_socket=True)
    _check_path(cfg.ctl_socket, "ctl socket (runtime_dir/kamailio_ctl)", unix_socket=True)
    _check_path(Path(cfg.mpath), "mpath")
    for value, what in ((cfg.rpc_socket_user, "rpc socket user"),
                        (cfg.rpc_socket_group, "rpc socket group")):  # fmt: skip
        if value is not None and not _ACCOUNT.match(value):
            raise UsageError(
                f"{what} {value!r}: expected a user or group name (letters, digits, '_', '-')"
                " or a number"
            )
    if cfg.rpc_socket_group is not None and cfg.rpc_socket_user is None:
        raise UsageError("rpc socket group given without a user: give the user too")


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("asterfleet.kamailio", ""),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # a Kamailio config, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("lb.cfg.j2")


def render_config(cfg: KamailioConfig) -> str:
    """The complete ``kamailio.cfg`` for ``cfg`` (validated first)."""
    validate(cfg)
    rpc_http_host: str | None = None
    rpc_http_port: int | None = None
    if cfg.rpc_http is not None:
        rpc_http_host, rpc_http_port = _parse_host_port(cfg.rpc_http, "rpc_http address")
    transport_mask = 4 | (1 if cfg.rpc_http is not None else 0)
    return _template().render(
        cfg=cfg,
        listen=[parse_socket(s) for s in cfg.listen],
        algorithm_id=cfg.algorithm_id,
        log_level=cfg.log_level_id,
        rpc_transport=transport_mask,
        rpc_http_host=rpc_http_host,
        rpc_http_port=rpc_http_port,
        ping_reply_codes=PING_REPLY_CODES,
        call_load=cfg.call_load,
        hash_size=CALL_LOAD_HASH_SIZE,
        has_tcp=any(s.lower().startswith("tcp:") for s in cfg.listen) or cfg.rpc_http is not None,
    )
