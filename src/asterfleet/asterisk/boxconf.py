"""The whole configuration of one fleet box's Asterisk (pure).

:func:`render_box_config` returns file name -> text for ``asterisk.conf``,
``modules.conf``, ``pjsip.conf``, ``manager.conf``, ``extensions.conf``,
``rtp.conf``, ``logger.conf`` and ``hep.conf``, plus the small files
Asterisk's core reads at every start (``cdr.conf``, ``cel.conf``,
``indications.conf``…, so a fresh box logs no "Unable to load config file"
errors): everything Asterisk 22 reads, so a box is set up by rendering into
an empty directory.

Traps this avoids (met with a real Asterisk 22.10.1): the sample
``[directories](!)`` section is a template whose paths are ignored, so the
section here is a plain ``[directories]``; a wrong ``astdatadir`` makes
Asterisk exit with "Stasis initialization failed", so the data directory
follows the install prefix; an OPTIONS from an address no endpoint
identifies gets 401, so the node agent's probe has its own identified
endpoint.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from asterfleet.capture.hepconf import HepConf, render_hep_conf
from asterfleet.errors import UsageError
from asterfleet.fleet.model import BalancerStatus

# Endpoint, context and user names (also used by the node agent and the docs).
BALANCER_ENDPOINT = "fleet-balancers"
AGENT_ENDPOINT = "asterfleet-agent"
LB_CONTEXT = "from-balancers"
PROBE_CONTEXT = "asterfleet-probe"
GATE_CONTEXT = "asterfleet-gate"
GATE_EXTEN = "asterfleet-gate"
AMI_USER = "asterfleet"

# Loaded explicitly (modules.conf autoload=no); the image builds this set.
MODULES = (
    # SIP stack and the configuration it reads
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_pjproject.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_pubsub.so",
    "chan_pjsip.so",
    "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_sdp_rtp.so",
    "res_pjsip_nat.so",
    "res_pjsip_caller_id.so",
    "res_pjsip_header_funcs.so",
    "res_pjsip_rfc3326.so",
    "res_pjsip_dtmf_info.so",
    # media
    "res_rtp_asterisk.so",
    "res_timing_timerfd.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "bridge_simple.so",
    "bridge_native_rtp.so",
    # dialplan
    "pbx_config.so",
    "app_dial.so",
    "app_echo.so",
    "func_channel.so",
    "func_strings.so",
)
#: With a capture server: res_hep sends, res_hep_pjsip every SIP message,
#: res_hep_rtcp every RTCP report sent or received (HEP type 5: media quality).
HEP_MODULES = ("res_hep.so", "res_hep_pjsip.so", "res_hep_rtcp.so")
#: Files that hold a secret (the AMI user's, the capture server's auth key):
#: written 0640, readable by Asterisk's group only.
SECRET_FILES = frozenset({"manager.conf", "hep.conf"})

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class BoxConfig:
    """What differs between boxes; everything else is fixed policy."""

    balancers: tuple[str, ...]  # addresses (or networks) of the load balancers
    ami_secret: str
    agent_address: str = "127.0.0.1"  # where the node agent probes and counts from
    sip_bind: str = "0.0.0.0"
    sip_port: int = 5060
    transports: tuple[str, ...] = ("udp",)
    external_address: str | None = None  # public address behind NAT (SIP and media)
    local_nets: tuple[str, ...] = ()  # networks reached without NAT
    rtp_start: int = 10000
    rtp_end: int = 20000
    ami_port: int = 5038
    codecs: tuple[str, ...] = ("ulaw", "alaw")
    dialplan_file: str = "dialplan.conf"
    dialplan_context: str = "fleet-dialplan"
    prefix: str = "/usr"  # where Asterisk is installed
    config_dir: str = "/etc/asterisk"  # where these files will be read from
    state_dir: str | None = None  # run, log, spool, db; default under the prefix's var
    container: bool = False  # log to stdout only
    capture: HepConf | None = None
    agent_may_stop: bool = False  # node run --on-idle stop: write=command too


def _check_address(what: str, value: str, network: bool = False) -> None:
    try:
        if network:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        kind = "an IP address or network (10.0.0.0/24)" if network else "an IP address"
        raise UsageError(f"{what} {value!r} is not {kind}") from None


def balancer_addresses(records: Iterable[BalancerStatus]) -> tuple[str, ...]:
    """The SIP addresses the balancers publish in their records, each once,
    in a stable order (so the rendered pjsip.conf does not churn)."""
    return tuple(sorted({a for r in records for a in r.sip_addresses}))


def check(cfg: BoxConfig) -> None:
    """UsageError naming the first bad setting."""
    if not cfg.balancers:
        raise UsageError(
            "no load balancer address: give --balancer ADDRESS (once per balancer) "
            "or --etcd to read them from the balancers' records"
        )
    for b in cfg.balancers:
        _check_address("balancer", b, network=True)
    _check_address("agent address", cfg.agent_address)
    _check_address("SIP bind address", cfg.sip_bind)
    if cfg.external_address is not None:
        _check_address("external address", cfg.external_address)
    for net in cfg.local_nets:
        _check_address("local network", net, network=True)
    for name, port in (("SIP port", cfg.sip_port), ("AMI port", cfg.ami_port)):
        if not 1 <= port <= 65535:
            raise UsageError(f"{name} {port} is outside 1-65535")
    if not (1024 <= cfg.rtp_start < cfg.rtp_end <= 65535):
        raise UsageError(f"RTP ports {cfg.rtp_start}-{cfg.rtp_end}: need 1024 <= start < end")
    for t in cfg.transports:
        if t not in ("udp", "tcp"):
            raise UsageError(f"transport {t!r}: use udp or tcp")
    if not cfg.ami_secret or any(c in cfg.ami_secret for c in ";\r\n"):
        raise UsageError("AMI secret must be non-empty, without ';' or line breaks")
    for what, value in (
        ("dialplan file", cfg.dialplan_file),
        ("dialplan context", cfg.dialplan_context),
    ):
        if not _NAME.match(value):
            raise UsageError(f"{what} {value!r}: use letters, digits, '.', '_' or '-'")
    for codec in cfg.codecs:
        if not _NAME.match(codec):
            raise UsageError(f"codec {codec!r} is not a codec name")
    for what, path in (("prefix", cfg.prefix), ("config dir", cfg.config_dir)):
        if not PurePosixPath(path).is_absolute():
            raise UsageError(f"{what} {path!r} must be an absolute path")


def _dirs(cfg: BoxConfig) -> dict[str, str]:
    prefix = PurePosixPath(cfg.prefix)
    var = PurePosixPath("/var") if str(prefix) == "/usr" else prefix / "var"
    state = PurePosixPath(cfg.state_dir) if cfg.state_dir else None
    return {
        "astetcdir": cfg.config_dir,
        "astmoddir": str(prefix / "lib" / "asterisk" / "modules"),
        # Documentation, sounds, keys: installed with Asterisk. A wrong one
        # stops Asterisk at start with "Stasis initialization failed".
        "astvarlibdir": str(var / "lib" / "asterisk"),
        "astdatadir": str(var / "lib" / "asterisk"),
        "astkeydir": str(var / "lib" / "asterisk"),
        "astagidir": str(var / "lib" / "asterisk" / "agi-bin"),
        "astdbdir": str(state / "db") if state else str(var / "lib" / "asterisk"),
        "astspooldir": str(state / "spool") if state else str(var / "spool" / "asterisk"),
        "astrundir": str(state / "run") if state else str(var / "run" / "asterisk"),
        "astlogdir": str(state / "log") if state else str(var / "log" / "asterisk"),
        "astsbindir": str(prefix / "sbin"),
    }


HEADER = "; GENERATED by `asterfleet asterisk config`: render it again rather than edit it.\n"


def _asterisk_conf(cfg: BoxConfig) -> str:
    lines = [
        "; asterisk.conf: where Asterisk finds its files, and core options.",
        HEADER.rstrip("\n"),
        "; A plain [directories] section: the sample's [directories](!) is a",
        "; template and its paths are ignored.",
        "[directories]",
        *(f"{k} => {v}" for k, v in _dirs(cfg).items()),
        "",
        "[options]",
        "verbose = 3",
        "debug = 0",
        "; No 'Connected to Asterisk' noise for each remote console.",
        "hideconnect = yes",
    ]
    return "\n".join(lines) + "\n"


def _modules_conf(cfg: BoxConfig) -> str:
    modules = list(MODULES) + (list(HEP_MODULES) if cfg.capture else [])
    lines = [
        "; modules.conf: exactly the modules a fleet box needs, nothing autoloaded.",
        HEADER.rstrip("\n"),
        "[modules]",
        "autoload = no",
        "",
        *(f"load => {m}" for m in modules),
    ]
    return "\n".join(lines) + "\n"


def _pjsip_conf(cfg: BoxConfig) -> str:
    out = [
        "; pjsip.conf: SIP for a box behind the asterfleet load balancers.",
        HEADER.rstrip("\n"),
        "[global]",
        "type = global",
        "user_agent = asterfleet-asterisk",
        "; Calls are told apart by the address they come from.",
        "endpoint_identifier_order = ip",
        "",
    ]
    for t in cfg.transports:
        out += [
            f"[transport-{t}]",
            "type = transport",
            f"protocol = {t}",
            f"bind = {_hostport(cfg.sip_bind, cfg.sip_port)}",
        ]
        if cfg.external_address:
            out += [
                "; Behind NAT: what the outside sees, in SIP headers and SDP.",
                f"external_signaling_address = {cfg.external_address}",
                f"external_media_address = {cfg.external_address}",
            ]
        out += [f"local_net = {net}" for net in cfg.local_nets]
        out.append("")
    common = [
        "disallow = all",
        f"allow = {','.join(cfg.codecs)}",
        "; Media always flows through this box: the balancers only relay SIP.",
        "direct_media = no",
        "rtp_symmetric = yes",
        "force_rport = yes",
        "; Record-Route through the balancer keeps in-dialog requests on it.",
        "rewrite_contact = no",
    ]
    out += [
        "; Calls from the load balancers, identified by their addresses.",
        f"[{BALANCER_ENDPOINT}]",
        "type = endpoint",
        f"context = {LB_CONTEXT}",
        *common,
        "",
        f"[{BALANCER_ENDPOINT}]",
        "type = identify",
        f"endpoint = {BALANCER_ENDPOINT}",
        *(f"match = {b}" for b in cfg.balancers),
        "",
    ]
    if not any(_covers(b, cfg.agent_address) for b in cfg.balancers):
        out += [
            "; The node agent's OPTIONS probe: identified, so it sees the box's real",
            "; answer (200, or 503 during a graceful stop) instead of 401.",
            f"[{AGENT_ENDPOINT}]",
            "type = endpoint",
            f"context = {PROBE_CONTEXT}",
            "disallow = all",
            f"allow = {cfg.codecs[0]}",
            "",
            f"[{AGENT_ENDPOINT}]",
            "type = identify",
            f"endpoint = {AGENT_ENDPOINT}",
            f"match = {cfg.agent_address}",
            "",
        ]
    return "\n".join(out)


def _covers(network: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _manager_conf(cfg: BoxConfig) -> str:
    local = ipaddress.ip_address(cfg.agent_address).is_loopback
    bind = cfg.agent_address if local else "0.0.0.0"
    lines = [
        "; manager.conf: AMI for the node agent only.",
        HEADER.rstrip("\n"),
        "[general]",
        "enabled = yes",
        f"port = {cfg.ami_port}",
        f"bindaddr = {bind}",
        "; The agent keeps one session open; no log line per login.",
        "displayconnects = no",
        "",
        f"[{AMI_USER}]",
        f"secret = {cfg.ami_secret}",
        "deny = 0.0.0.0/0.0.0.0",
        f"permit = {cfg.agent_address}/{'255.255.255.255' if '.' in cfg.agent_address else '128'}",
        "; Least privilege for counting calls: channel events (read=call) and",
        "; CoreShowChannels/CoreSettings (write=reporting). No 'command', which",
        "; would also allow 'core stop now'.",
        "read = call",
    ]
    if cfg.agent_may_stop:
        lines += [
            "; --agent-may-stop: the agent runs 'core stop gracefully' after a drain",
            "; (node run --on-idle stop); 'command' allows any CLI command.",
            "write = reporting,command",
        ]
    else:
        lines.append("write = reporting")
    return "\n".join(lines) + "\n"


def _extensions_conf(cfg: BoxConfig) -> str:
    lines = [
        "; extensions.conf: where calls from the load balancers go.",
        HEADER.rstrip("\n"),
        "[general]",
        "static = yes",
        "writeprotect = yes",
        "",
        "; Calls from the balancers: the rollout gate's test number, then the",
        f"; operator's dialplan (context [{cfg.dialplan_context}] in {cfg.dialplan_file}).",
        f"[{LB_CONTEXT}]",
        f"include => {GATE_CONTEXT}",
        f"include => {cfg.dialplan_context}",
        "",
        "; A test call for the rollout gate: answers, waits 2 s, hangs up.",
        f"[{GATE_CONTEXT}]",
        f"exten => {GATE_EXTEN},1,Answer()",
        " same => n,Wait(2)",
        " same => n,Hangup()",
        "",
        "; The node agent's probe endpoint: no calls from there.",
        f"[{PROBE_CONTEXT}]",
        "",
        "; The operator's own dialplan; a missing file is skipped.",
        f'#tryinclude "{cfg.dialplan_file}"',
    ]
    return "\n".join(lines) + "\n"


def _rtp_conf(cfg: BoxConfig) -> str:
    lines = [
        "; rtp.conf: the media ports (open them in the firewall).",
        HEADER.rstrip("\n"),
        "[general]",
        f"rtpstart = {cfg.rtp_start}",
        f"rtpend = {cfg.rtp_end}",
        "strictrtp = yes",
        "icesupport = no",
    ]
    return "\n".join(lines) + "\n"


def _logger_conf(cfg: BoxConfig) -> str:
    lines = [
        "; logger.conf",
        HEADER.rstrip("\n"),
        "[general]",
        "dateformat = %F %T.%3q",
        "",
        "[logfiles]",
    ]
    if cfg.container:
        lines += [
            "; In a container: everything to stdout (run asterisk -f).",
            "console => notice,warning,error,verbose",
        ]
    else:
        lines += ["console => notice,warning,error", "messages.log => notice,warning,error"]
    return "\n".join(lines) + "\n"


def _hep_conf(cfg: BoxConfig) -> str:
    if cfg.capture is None:
        return (
            "; hep.conf: no capture server given (--capture); res_hep is not loaded.\n"
            + HEADER
            + "[general]\nenabled = no\n"
        )
    return render_hep_conf(cfg.capture)


# Files Asterisk's core and the loaded modules always read: without them
# every start logs "ERROR … Unable to load config file" five times (checked
# with Asterisk 22.10.1). Their content is the box's policy, the same on
# every box.
_QUIET_DEFAULTS: dict[str, tuple[str, ...]] = {
    "cdr.conf": (
        "; cdr.conf: no CDRs (no CDR backend is loaded; HEP capture records every call).",
        "[general]",
        "enable = no",
    ),
    "cel.conf": ("; cel.conf: no channel event logging.", "[general]", "enable = no"),
    "features.conf": ("; features.conf: Asterisk's defaults (no call features).", "[general]"),
    "ccss.conf": ("; ccss.conf: call completion is not used.", "[general]"),
    "acl.conf": ("; acl.conf: no named ACLs (manager.conf and pjsip.conf carry their own).",),
    "udptl.conf": ("; udptl.conf: no T.38 fax; Asterisk's defaults.", "[general]"),
    "pjproject.conf": ("; pjproject.conf: pjproject's defaults.",),
    "stasis.conf": ("; stasis.conf: Asterisk's defaults (message bus thread pool).",),
    "indications.conf": (
        "; indications.conf: tones played by this box itself (North American).",
        "[general]",
        "country = us",
        "",
        "[us]",
        "description = United States / North America",
        "ringcadence = 2000,4000",
        "dial = 350+440",
        "busy = 480+620/500,0/500",
        "ring = 440+480/2000,0/4000",
        "congestion = 480+620/250,0/250",
    ),
}


def _quiet_default(name: str) -> str:
    first, *rest = _QUIET_DEFAULTS[name]
    return "\n".join([first, HEADER.rstrip("\n"), *rest]) + "\n"


def render_box_config(cfg: BoxConfig) -> dict[str, str]:
    """Every configuration file of the box, by file name."""
    check(cfg)
    return {
        "asterisk.conf": _asterisk_conf(cfg),
        "modules.conf": _modules_conf(cfg),
        "pjsip.conf": _pjsip_conf(cfg),
        "manager.conf": _manager_conf(cfg),
        "extensions.conf": _extensions_conf(cfg),
        "rtp.conf": _rtp_conf(cfg),
        "logger.conf": _logger_conf(cfg),
        "hep.conf": _hep_conf(cfg),
        **{name: _quiet_default(name) for name in _QUIET_DEFAULTS},
    }
