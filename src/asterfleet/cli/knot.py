"""`asterfleet knot …` (build definitions and their builds) and
`asterfleet factory worker` (the process that runs the builds)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from asterfleet.cli.common import (
    JsonOption,
    PortOpt,
    console,
    emit,
    etcd_options,
    etcd_security,
    fail,
    print_table,
    user_errors,
)
from asterfleet.errors import UsageError
from asterfleet.factory import queue
from asterfleet.factory.db import DEFAULT_DB, open_store
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.knot_input import (
    KnotInput,
    mask_url_credentials,
    new_webhook_secret,
    parse_pairs,
    public_spec,
    validate_input,
)
from asterfleet.factory.store import add_knot, edit_knot, get_knot, list_knots, remove_knot

app = typer.Typer(
    help=(
        "Knots: build definitions of the image factory.\n\n"
        "A knot names a git repository and ref (a branch, a tag pattern or "
        "both), a Dockerfile, the image repository, tag rules, a test command "
        "run inside the built image, triggers (signed webhooks, git polling, "
        "URL polling) and owners. `asterfleet knot build NAME` queues a build "
        "now; `asterfleet factory worker` runs the queue."
    ),
    no_args_is_help=True,
)
factory_app = typer.Typer(help="The image factory's worker.", no_args_is_help=True)

DbOption = typer.Option(
    None,
    "--db",
    envvar="ASTERFLEET_FACTORY_DB",
    help="The factory's database: sqlite:///PATH, a path or postgresql://… "
    f"[default: {DEFAULT_DB.removeprefix('sqlite:///')}]",
)


SECRET_ARG_HELP = (
    "NAME (its value from the environment variable NAME) or NAME=@FILE; repeatable. "
    "Given to RUN steps as a build secret (RUN --mount=type=secret,id=NAME), stored "
    "sealed, never shown. Never NAME=VALUE: the command line is visible to every local user."
)


def secret_args(values: list[str]) -> dict[str, str]:
    """``--secret-build-arg`` values: NAME from the environment, NAME=@FILE
    from a file; a value on the command line is refused (``ps`` shows it)."""
    import os

    out: dict[str, str] = {}
    for text in values:
        name, sep, source = text.partition("=")
        if sep and not source.startswith("@"):
            raise UsageError(
                f"--secret-build-arg {name}=…: a value on the command line is visible to "
                f"every local user: export {name} and give --secret-build-arg {name}, "
                f"or give {name}=@FILE"
            )
        if sep:
            try:
                out[name] = Path(source[1:]).read_text().rstrip("\n")
            except OSError as exc:
                raise UsageError(
                    f"--secret-build-arg {name}=@{source[1:]}: cannot read it: {exc.strerror}"
                ) from None
        elif name in os.environ:
            out[name] = os.environ[name]
        else:
            raise UsageError(
                f"--secret-build-arg {name}: the environment variable {name} is not set: "
                f"export it, or give {name}=@FILE"
            )
    return out


@app.command("add")
def add(
    name: str,
    git: str = typer.Option(None, "--git", help="Git URL (any URL `git clone` takes)."),
    repository: str = typer.Option(None, "--repository", help="Image repository NS/NAME."),
    branch: str = typer.Option("main", "--branch", help="Branch to build ('' for none)."),
    tag_pattern: str = typer.Option(None, "--tag-pattern", help="Git tags to build, e.g. 'v*'."),
    dockerfile: str = typer.Option("Dockerfile", "--dockerfile"),
    context: str = typer.Option(".", "--context"),
    test: str = typer.Option(None, "--test", help="Shell command run inside the built image."),
    build_arg: list[str] = typer.Option([], "--build-arg", help="KEY=VALUE, repeatable."),
    secret_build_arg: list[str] = typer.Option([], "--secret-build-arg", help=SECRET_ARG_HELP),
    tag_rule: list[str] = typer.Option(
        [],
        "--tag-rule",
        help="branch:GLOB=TAG or tag:GLOB=TAG ({name} {version} {sha} {short_sha}).",
    ),
    no_latest: bool = typer.Option(False, "--no-latest", help="Do not tag the branch `latest`."),
    sha_tag: bool = typer.Option(False, "--sha-tag", help="Also tag the short commit sha."),
    owner: list[str] = typer.Option([], "--owner", help="Registry user(s) owning the knot."),
    webhook: bool = typer.Option(False, "--webhook", help="Enable the signed webhook trigger."),
    webhook_provider: str = typer.Option(
        None, "--webhook-provider", help="Only accept github, gitea or gitlab deliveries."
    ),
    git_poll: int = typer.Option(None, "--git-poll", help="Poll the git remote every N s."),
    url: str = typer.Option(None, "--poll-url", help="Rebuild when this URL's content changes."),
    url_poll: int = typer.Option(300, "--poll-url-every", help="Seconds between URL polls."),
    hook_webhook: str = typer.Option(None, "--deploy-webhook", help="POSTed after success."),
    hook_command: str = typer.Option(None, "--deploy-command", help="Run after success."),
    notify_url: str = typer.Option(None, "--notify-url", help="POSTed after every build."),
    rollout: str = typer.Option(
        None, "--rollout", metavar="CLUSTER", help="Roll the pushed image out on CLUSTER."
    ),
    builder: str = typer.Option("buildah", "--builder", help="buildah or docker."),
    from_file: Path = typer.Option(None, "--from-file", help="A knot as JSON."),
    db: str = DbOption,
) -> None:
    """Add a knot. With --webhook the secret is printed once."""
    with user_errors():
        if from_file is not None:
            try:
                data: dict[str, Any] = json.loads(from_file.read_text())
            except (OSError, ValueError) as exc:
                raise UsageError(f"--from-file {from_file}: {exc}") from exc
            data["name"] = name
            if secret_build_arg:
                data["secret_build_args"] = {
                    **(data.get("secret_build_args") or {}),
                    **secret_args(secret_build_arg),
                }
            knot = validate_knot(data)
        else:
            if not git or not repository:
                raise UsageError("knot add: give --git and --repository (or --from-file)")
            inp = KnotInput(
                name=name,
                git_url=git,
                repository=repository,
                branch=branch,
                tag_pattern=tag_pattern or "",
                dockerfile=dockerfile,
                context=context,
                tag_rules=tag_rule or None,
                latest=not no_latest,
                sha_tag=sha_tag,
                build_args=build_arg,
                secret_build_args=[f"{k}={v}" for k, v in secret_args(secret_build_arg).items()],
                test_command=test or "",
                owners=owner,
                webhook=webhook,
                webhook_provider=webhook_provider or "",
                git_poll_seconds="" if git_poll is None else str(git_poll),
                poll_url=url or "",
                poll_url_seconds=str(url_poll),
                deploy_webhook=hook_webhook or "",
                deploy_command=hook_command or "",
                deploy_rollout=rollout or "",
                notify_url=notify_url or "",
                builder=builder,
            )
            knot = validate_input(inp, new_webhook_secret() if webhook else None)
        add_knot(open_store(db), knot)
    console.print(f"knot {name} added: {knot.git_url} -> {knot.repository}", highlight=False)
    if knot.triggers.webhook_secret:
        console.print(
            f"webhook: POST /hooks/knots/{name} with secret {knot.triggers.webhook_secret}"
            " (shown once)",
            highlight=False,
        )


@app.command("ls")
def ls(db: str = DbOption, as_json: bool = JsonOption) -> None:
    """List knots with their last build."""
    with user_errors():
        engine = open_store(db)
        knots = list_knots(engine)
        last = {k.name: queue.list_builds(engine, k.name, limit=1) for k in knots}
    rows = [
        {
            "name": k.name,
            "git_url": mask_url_credentials(k.git_url),
            "ref": k.branch or k.tag_pattern,
            "repository": k.repository,
            "last_build": last[k.name][0].number if last[k.name] else None,
            "last_state": last[k.name][0].state if last[k.name] else None,
        }
        for k in knots
    ]
    emit(
        as_json,
        rows,
        lambda: print_table(
            None,
            ["knot", "git", "ref", "repository", "last build", "state"],
            [
                [
                    r["name"],
                    r["git_url"],
                    r["ref"],
                    r["repository"],
                    r["last_build"],
                    r["last_state"],
                ]
                for r in rows
            ],
        ),
    )


@app.command("show")
def show(name: str, db: str = DbOption, as_json: bool = JsonOption) -> None:
    """A knot's definition (secrets hidden) and its recent builds."""
    with user_errors():
        engine = open_store(db)
        spec = public_spec(get_knot(engine, name))
        builds = [b.as_dict() for b in queue.list_builds(engine, name, limit=20)]

    def render() -> None:
        console.print_json(json.dumps(spec))
        print_table(
            "builds",
            ["#", "ref", "state", "reason", "digest"],
            [[b["number"], b["ref"], b["state"], b["reason"], b["digest"]] for b in builds],
        )

    emit(as_json, {"knot": spec, "builds": builds}, render)


@app.command("edit")
def edit(
    name: str,
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="FIELD=VALUE (VALUE as JSON when it parses), e.g. test_command='sh -c true', "
        "triggers.git_poll_seconds=60. Repeatable.",
    ),
    secret_build_arg: list[str] = typer.Option([], "--secret-build-arg", help=SECRET_ARG_HELP),
    drop_secret_build_arg: list[str] = typer.Option(
        [], "--drop-secret-build-arg", metavar="NAME", help="Remove a secret build arg."
    ),
    db: str = DbOption,
) -> None:
    """Change fields of a knot; the result is validated before it is saved."""
    with user_errors():
        changes: dict[str, Any] = {}
        for key, raw in parse_pairs(set_, "--set").items():
            if key.partition(".")[0] == "secret_build_args" or key == "triggers.webhook_secret":
                raise UsageError(
                    f"--set {key}=…: a secret on the command line is visible to every local "
                    "user: use --secret-build-arg NAME (from the environment) or NAME=@FILE"
                )
            try:
                value: Any = json.loads(raw)
            except ValueError:
                value = raw
            head, _, rest = key.partition(".")
            if rest:
                changes.setdefault(head, {})[rest] = value
            else:
                changes[head] = value
        if not (changes or secret_build_arg or drop_secret_build_arg):
            raise UsageError(
                "knot edit: give at least one --set FIELD=VALUE, --secret-build-arg "
                "or --drop-secret-build-arg"
            )
        engine = open_store(db)
        if secret_build_arg or drop_secret_build_arg:
            stored = dict(get_knot(engine, name).secret_build_args)
            for gone in drop_secret_build_arg:
                if stored.pop(gone, None) is None:
                    raise UsageError(
                        f"--drop-secret-build-arg {gone}: knot {name} has no such secret"
                    )
            stored.update(secret_args(secret_build_arg))
            changes["secret_build_args"] = stored
        edit_knot(engine, name, changes)
    console.print(f"knot {name} updated")


@app.command("rm")
def rm(
    name: str,
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
    db: str = DbOption,
) -> None:
    """Remove a knot and its build history (the pushed images stay)."""
    if not yes:
        typer.confirm(f"remove knot {name} and its builds?", abort=True)
    with user_errors():
        remove_knot(open_store(db), name)
    console.print(f"knot {name} removed")


@app.command("build")
def build(
    name: str,
    ref: str = typer.Option(None, "--ref", help="refs/heads/B or refs/tags/T (default: branch)."),
    db: str = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Build now (joins a build of the same ref that is still queued)."""
    with user_errors():
        engine = open_store(db)
        knot = get_knot(engine, name)
        if ref is None:
            if knot.branch is None:
                raise UsageError(f"knot {name} has no branch: give --ref refs/tags/TAG")
            ref = f"refs/heads/{knot.branch}"
        if not ref.startswith(("refs/heads/", "refs/tags/")):
            raise UsageError(f"--ref {ref!r}: expected refs/heads/BRANCH or refs/tags/TAG")
        result = queue.enqueue(engine, name, ref, None, "manual")
    emit(
        as_json,
        {"build": result.build.number, "joined": result.joined},
        lambda: console.print(
            f"{name}#{result.build.number} {'joined (already queued)' if result.joined else 'queued'}"
        ),
    )


@app.command("cancel")
def cancel(name: str, number: int, db: str = DbOption) -> None:
    """Cancel a queued or running build."""
    with user_errors():
        b = queue.cancel(open_store(db), name, number)
    console.print(f"{name}#{number}: {b.state if b.state == 'cancelled' else 'cancel requested'}")


@app.command("retry")
def retry(name: str, number: int, db: str = DbOption) -> None:
    """Queue a finished build again (same ref and commit)."""
    with user_errors():
        result = queue.retry(open_store(db), name, number)
    console.print(f"{name}#{result.build.number} queued (retry of #{number})")


@app.command("log")
def log_(
    name: str,
    number: int,
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream until it finishes."),
    db: str = DbOption,
) -> None:
    """Print a build's log."""
    from asterfleet.factory.logs import read_log, stream_log

    with user_errors():
        engine = open_store(db)
        b = queue.get_build(engine, name, number)
    if not follow:
        sys.stdout.write(read_log(engine, b.id)[0])
        return

    async def tail() -> None:
        async for _, chunk in stream_log(engine, b.id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())


@factory_app.command("worker")
@etcd_options
def worker(
    registry: str = typer.Option(
        ...,
        "--registry",
        envvar="ASTERFLEET_REGISTRY",
        help="Registry HOST:PORT images are pushed to.",
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP to the registry."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, max=32),
    worker_id: str = typer.Option(None, "--id", help="Stable worker id (default: hostname)."),
    buildah_root: Path = typer.Option(None, "--buildah-root", help="Private buildah storage."),
    until_idle: bool = typer.Option(False, "--until-idle", help="Run the queue dry, then exit."),
    metrics_port: int = PortOpt(0, "--metrics-port", help="Serve /metrics (0 = off).", off=True),
    etcd: str = typer.Option(
        None, "--etcd", envvar="ASTERFLEET_ETCD", help="etcd for knots that start rollouts."
    ),
    db: str = DbOption,
    console_db: str = typer.Option(
        None,
        "--console-db",
        envvar="ASTERFLEET_CONSOLE_DB",
        help="The console's database: the one identity the worker's short-lived push "
        "tokens are made in [default: ~/.local/state/asterfleet/console.db].",
    ),
) -> None:
    """Run queued builds: checkout, build (buildah), test, push, hooks.

    Workers on several machines share one PostgreSQL store (`--db
    postgresql://…`): each claims builds with SELECT … FOR UPDATE SKIP LOCKED.
    """
    from prometheus_client import start_http_server

    from asterfleet.db import default_url, open_database
    from asterfleet.factory.worker import Worker, WorkerSettings

    with user_errors():
        settings = WorkerSettings(
            registry=registry,
            tls_verify=not insecure,
            concurrency=concurrency,
            etcd=etcd,
            etcd_security=etcd_security(),
        )
        if worker_id:
            settings.worker_id = worker_id
        if buildah_root:
            settings.buildah_root = buildah_root / "root"
            settings.buildah_runroot = buildah_root / "run"
        # ASTERFLEET_DB meant the factory's database for the worker, never this one.
        identity = open_database(console_db or default_url(legacy=False))
        w = Worker(open_store(db), settings, identity)
    if metrics_port:
        try:
            start_http_server(metrics_port, addr="127.0.0.1")
        except OSError as exc:
            fail(
                f"--metrics-port {metrics_port}: cannot listen there ({exc.strerror or exc}): "
                "choose a free port"
            )
    if until_idle:
        w.recover()
        done = w.run_until_idle()
        console.print(
            f"{len(done)} build(s): " + ", ".join(f"{b.knot}#{b.number} {b.state}" for b in done)
        )
        return
    signal.signal(signal.SIGTERM, lambda *_: w.stop.set())
    try:
        w.serve()
    except KeyboardInterrupt:
        w.stop.set()
