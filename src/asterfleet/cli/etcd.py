"""`asterfleet etcd …`: diagnose and repair etcd membership, bootstrap from a token."""

from __future__ import annotations

from pathlib import Path

import typer

from asterfleet.cli.common import (
    ClusterOpt,
    EtcdOpt,
    JsonOption,
    console,
    emit,
    etcd_options,
    etcd_security,
    fail,
    print_table,
    user_errors,
)
from asterfleet.errors import UsageError
from asterfleet.etcdtools import discovery as disc
from asterfleet.etcdtools.cluster import gather_facts, split_endpoints
from asterfleet.etcdtools.doctor import DEFAULT_QUOTA_BYTES, Report, diagnose
from asterfleet.etcdtools.rejoin import (
    env_file,
    execute,
    parse_peer_urls,
    plan_when_ready,
    start_flags,
    systemd_dropin,
)

ENV = "ASTERFLEET_"

app = typer.Typer(
    help=(
        "Diagnose and repair etcd membership.\n\n"
        "`doctor` says what is wrong and the fix; `rejoin` is the safe form of "
        "'stop etcd, delete its cached state, rejoin' for a member whose data "
        "directory is lost or belongs to another cluster; `discovery new` creates "
        "a bootstrap token on an etcd you already run."
    ),
    no_args_is_help=True,
)
discovery_app = typer.Typer(
    help="Discovery tokens for `etcd --discovery` on your own etcd.", no_args_is_help=True
)
app.add_typer(discovery_app, name="discovery")

EndpointsOption = typer.Option(
    ...,
    "--endpoints",
    envvar=ENV + "ETCD",
    help="Client URLs of the members, HOST:PORT, comma-separated or repeated. "
    "Members listed by those are probed too.",
)


def _parse_data_dirs(values: list[str]) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--data-dir {value!r}: expected NAME=DIR, e.g. m2=/var/lib/etcd")
        out.append((name, Path(path)))
    return out


def _human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _render(report: Report) -> None:
    print_table(
        f"etcd cluster {report.cluster_id or '?'}",
        ["member", "id", "endpoint", "answers", "leader", "term", "index", "db", "alarms"],
        [
            [
                m.name,
                m.id,
                m.endpoint,
                "yes" if m.reachable else "NO",
                "*" if m.is_leader else "",
                m.raft_term,
                m.raft_index,
                _human_size(m.db_size),
                ",".join(m.alarms),
            ]
            for m in report.members
        ],
    )
    if not report.findings:
        console.print("[green]healthy:[/] no findings")
        return
    for f in report.findings:
        colour = {"error": "red", "warning": "yellow", "info": "blue"}[f.severity]
        subject = f" {f.subject}" if f.subject else ""
        console.print(f"[{colour}]{f.severity}[/] [bold]{f.code}[/]{subject}: {f.message}")
        console.print(f"  fix: {f.fix}", highlight=False)
    verdict = "[green]healthy[/]" if report.healthy else "[red]unhealthy[/]"
    console.print(f"cluster is {verdict}")


@app.command("doctor")
@etcd_options
def doctor(
    endpoints: list[str] = EndpointsOption,
    data_dir: list[str] = typer.Option(
        [],
        "--data-dir",
        help="NAME=DIR: a member's data directory on this machine, to tell a lost "
        "directory from a stopped member. Repeatable.",
    ),
    timeout: float = typer.Option(2.0, min=0.1, max=60, help="Seconds per request."),
    quota_bytes: int = typer.Option(
        DEFAULT_QUOTA_BYTES, help="The members' --quota-backend-bytes (for the DB size check)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """For each member: answers or not, leader, raft term and index, DB size,
    alarms; cluster-ID agreement; listed members that do not answer; a member
    whose data directory belongs to another cluster. Every finding comes with
    the fix. Exit code 1 when the cluster is unhealthy."""
    with user_errors():
        security = etcd_security()
        facts = gather_facts(
            split_endpoints(endpoints, security.tls), _parse_data_dirs(data_dir), timeout, security
        )
        report = diagnose(facts, quota_bytes)
    emit(as_json, report.to_json(), lambda: _render(report))
    if not report.healthy:
        raise typer.Exit(1)


@app.command("rejoin")
@etcd_options
def rejoin(
    member: str = typer.Option(..., "--member", help="Name of the member to rejoin."),
    data_dir: Path = typer.Option(
        ..., "--data-dir", help="Its data directory (moved aside to DIR.bak-TIME first)."
    ),
    endpoints: list[str] = EndpointsOption,
    peer_url: list[str] = typer.Option(
        [], "--peer-url", help="Its peer URL, when it is no longer in the member list."
    ),
    write_env: Path | None = typer.Option(
        None, "--env-file", help="Also write the settings as an EnvironmentFile (ETCD_…=…)."
    ),
    write_dropin: Path | None = typer.Option(
        None,
        "--systemd-dropin",
        help="Also write a systemd drop-in, e.g. /etc/systemd/system/etcd.service.d/rejoin.conf.",
    ),
    timeout: float = typer.Option(5.0, min=0.1, max=60, help="Seconds per request."),
    wait: float = typer.Option(
        10.0,
        "--wait",
        min=0,
        max=300,
        help="Seconds to keep re-checking while there is no leader or too few members "
        "answer (an election after a leader died takes a second or two); 0: check once.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Rejoin a member whose data directory is lost or stale.

    Run it with the member's etcd STOPPED. It refuses (and changes nothing)
    when that etcd still answers, or when the other members would not keep a
    quorum or have no leader, after re-checking for --wait seconds (what it
    waits for is shown on stderr). Otherwise: back up the data directory, remove the stale member
    through a healthy one, add it back, and print the flags to start it with
    (`--initial-cluster-state existing`). With etcd auth on, run it as root
    (changing membership needs it): --etcd-user root."""
    with user_errors():
        security = etcd_security()
        urls = split_endpoints(endpoints, security.tls)
        plan = plan_when_ready(
            lambda: gather_facts(urls, timeout=timeout, security=security, alarms=False),
            member,
            parse_peer_urls(peer_url),
            wait=wait,
            progress=lambda line: typer.echo(line, err=True),
        )
        result = execute(plan, data_dir, timeout=timeout, security=security)
        for path, text in ((write_env, env_file(result)), (write_dropin, systemd_dropin(result))):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    flags = start_flags(result)
    data = {
        "member": result.name,
        "member_id": f"{result.member_id:x}",
        "backup": str(result.backup) if result.backup else None,
        "initial_cluster": result.initial_cluster,
        "flags": flags,
    }

    def render() -> None:
        backup = f"; old data in {result.backup}" if result.backup else ""
        console.print(f"member {result.name} re-added as {result.member_id:x}{backup}")
        console.print("start it with:", highlight=False)
        typer.echo("etcd " + " ".join(flags) + " [your usual URL flags]")

    emit(as_json, data, render)


@discovery_app.command("new")
@etcd_options
def discovery_new(
    size: int = typer.Option(..., "--size", help="Number of members that will bootstrap."),
    etcd: str = typer.Option(
        ...,
        "--etcd",
        envvar=ENV + "DISCOVERY_ETCD",
        help="An existing etcd (not the new cluster) started with --enable-v2=true.",
    ),
    token: str | None = typer.Option(None, help="Token name [default: random]."),
    as_json: bool = JsonOption,
) -> None:
    """Create a discovery token; give the printed URL to each new member as
    `etcd --discovery URL` (and no --initial-cluster)."""
    with user_errors():
        created = disc.new_token(etcd, size, token, security=etcd_security())
    emit(as_json, {"url": created.url, "size": created.size}, lambda: typer.echo(created.url))


@discovery_app.command("show")
@etcd_options
def discovery_show(
    url: str = typer.Argument(..., help="The discovery URL from `discovery new`."),
    as_json: bool = JsonOption,
) -> None:
    """The expected size and the members registered so far."""
    with user_errors():
        found = disc.show(url, security=etcd_security())
    data = {
        "url": found.url,
        "size": found.size,
        "registered": [
            {"id": r.member_id, "name": r.name, "peer_urls": list(r.peer_urls)}
            for r in found.registered
        ],
    }
    emit(
        as_json,
        data,
        lambda: print_table(
            f"{found.url} ({len(found.registered)}/{found.size} registered)",
            ["name", "id", "peer URLs"],
            [[r.name, r.member_id, ",".join(r.peer_urls)] for r in found.registered],
        ),
    )


@app.command("secure")
@etcd_options
def secure(
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    out: Path = typer.Option(
        ...,
        "--out",
        help="Directory for the passwords of the users created now: USER.password, mode 0600.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Give each part of a cluster its own etcd user and role, then switch
    etcd's authentication on.

    Roles (and users) CLUSTER-node, CLUSTER-balancer, CLUSTER-operator and
    CLUSTER-capture: a node may write only nodes/, a balancer only
    balancers/, an operator (and the console) admin/ and rollouts/, the
    capture server its capture key; nothing outside /asterfleet/CLUSTER/.
    With client certificates (etcd --client-cert-auth), a certificate whose
    common name is the user name logs in without a password.

    Run it again for another cluster, or after a partial run: existing users
    keep their passwords. Once auth is on, run it as root
    (--etcd-user root, password from --out DIR/root.password).

    Example:

        asterfleet etcd secure --etcd 10.0.0.1:2379 --etcd-cacert ca.pem --cluster prod --out /etc/asterfleet/etcd
    """
    import asyncio

    from asterfleet.etcd_client import Etcd, parse_endpoints
    from asterfleet.etcdtools import roles
    from asterfleet.fleet.keys import check_cluster_name
    from asterfleet.secretfile import write_secret

    with user_errors():
        parse_endpoints(etcd)
        check_cluster_name(cluster)
        if not out.is_dir():
            fail(f"--out {out}: not a directory (create it first, mode 0700)")
        planned = roles.plan(cluster)
        security = etcd_security()

        async def go() -> roles.Outcome:
            async with Etcd(etcd, timeout=10.0, security=security) as client:
                return await roles.apply(client, planned)

        outcome = asyncio.run(go())
        for user, password in outcome.created.items():
            write_secret(out / f"{user}.password", password + "\n", what="--out")
    data = {
        "cluster": cluster,
        "roles": [
            {
                "name": r.name,
                "grants": [
                    {"access": g.access, "key": g.key, "prefix": g.prefix} for g in r.grants
                ],
            }
            for r in planned
        ],
        "users_created": sorted(outcome.created),
        "users_kept": sorted(outcome.kept),
        "auth_enabled": outcome.auth_enabled,
    }

    def render() -> None:
        print_table(
            f"etcd roles for cluster {cluster!r}",
            ["ROLE", "ACCESS"],
            [
                [
                    r.name,
                    ", ".join(f"{g.access} {g.key}{'*' if g.prefix else ''}" for g in r.grants),
                ]
                for r in planned
            ],
        )
        for user in sorted(outcome.created):
            console.print(f"created user {user}: password in {out / (user + '.password')}")
        for user in sorted(outcome.kept):
            console.print(f"kept user {user} (its password is unchanged)")
        console.print("etcd authentication is on")

    emit(as_json, data, render)
