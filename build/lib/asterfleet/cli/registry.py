"""`asterfleet registry …`: the token server of the Distribution registry,
its configuration, users, namespaces, grants and personal access tokens."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import typer

from asterfleet.cli.common import JsonOption, console, emit, print_table, user_errors
from asterfleet.errors import UsageError
from asterfleet.factory.db import DEFAULT_DB, open_store

app = typer.Typer(
    help=(
        "The image registry: asterfleet is the token server of the CNCF "
        "Distribution registry (`docker-registry`).\n\n"
        "Start with `asterfleet registry config --out DIR --realm "
        "http://HOST:PORT/token --service NAME`, run `docker-registry serve "
        "DIR/config.yml`, then `asterfleet registry serve --config-dir DIR`. "
        "Add users with `registry user add`; each owns the namespace of its "
        "name (`alice/…`)."
    ),
    no_args_is_help=True,
)
user_app = typer.Typer(help="Registry users (argon2-hashed passwords).", no_args_is_help=True)
token_app = typer.Typer(
    help="Personal access tokens: scoped, expiring, shown once, revocable.",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

DbOption = typer.Option(
    DEFAULT_DB, "--db", envvar="ASTERFLEET_DB", help="sqlite:///PATH or postgresql://…"
)


def _identity(db: str):  # type: ignore[no-untyped-def]
    from asterfleet.registry.identity import SqlIdentity

    return SqlIdentity(open_store(db))


@app.command()
def config(
    out: Path = typer.Option(..., "--out", help="Directory for config.yml, key and certificate."),
    realm: str = typer.Option(
        ..., "--realm", help="Token endpoint URL, e.g. http://127.0.0.1:5001/token"
    ),
    service: str = typer.Option(..., "--service", help="Service name (the token audience)."),
    issuer: str = typer.Option(None, "--issuer", help="Token issuer (default: the service)."),
    listen: str = typer.Option("127.0.0.1:5000", "--listen", help="Registry HOST:PORT."),
    notify_url: str = typer.Option(
        None, "--notify-url", help="Catalogue hook (default: REALM's host + /hooks/registry)."
    ),
    storage: Path = typer.Option(None, "--storage", help="Blob storage (default: OUT/storage)."),
) -> None:
    """Write the registry's config.yml and the token signing key + certificate."""
    from asterfleet.registry.config import write_config

    with user_errors():
        settings = write_config(out, realm, service, issuer, listen, notify_url, storage)
    console.print(
        f"wrote {out / 'config.yml'} (service {settings.service}, issuer {settings.issuer}); "
        f"run: docker-registry serve {out / 'config.yml'}",
        highlight=False,
    )


@app.command()
def serve(
    config_dir: Path = typer.Option(..., "--config-dir", help="What `registry config` wrote."),
    db: str = DbOption,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(5001, "--port"),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Processes serving requests (one per core is a good start); one of them "
        "runs the periodic catalogue reconcile.",
    ),
    token_ttl: int = typer.Option(300, "--token-ttl", help="Bearer token lifetime (seconds)."),
    reconcile: float = typer.Option(
        300.0, "--reconcile-interval", help="Seconds between catalogue reconciles."
    ),
    cache_seconds: float = typer.Option(
        5.0, "--login-cache", help="Seconds a successful login and access decision are reused."
    ),
) -> None:
    """Run the token server, catalogue hook and knot webhooks.

    The console serves the same endpoints when started with --registry-dir;
    this command runs them alone (e.g. several workers for token throughput).
    """
    from asterfleet.registry.config import read_settings
    from asterfleet.registry.serve import ServeOptions
    from asterfleet.registry.serve import serve as run_server

    with user_errors():
        read_settings(config_dir)  # fail early, with the message, before forking workers
        opts = ServeOptions(str(config_dir.resolve()), db, token_ttl, reconcile, cache_seconds)
    run_server(opts, host, port, workers)


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


@user_app.command("add")
def user_add(
    username: str,
    admin: bool = typer.Option(False, "--admin", help="May do anything, list the catalogue."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password."),
    db: str = DbOption,
) -> None:
    """Add a user; it owns the namespace USERNAME/."""
    with user_errors():
        _identity(db).add_user(username, _password(password_stdin), is_admin=admin)
    console.print(f"user {username} added")


@user_app.command("ls")
def user_ls(db: str = DbOption, as_json: bool = JsonOption) -> None:
    """List users."""
    with user_errors():
        users = _identity(db).users()
    emit(
        as_json,
        users,
        lambda: print_table(
            None,
            ["user", "admin", "disabled"],
            [[u["username"], u["admin"], u["disabled"]] for u in users],
        ),
    )


@app.command("namespace")
def namespace(
    name: str,
    owner: str = typer.Option(..., "--owner"),
    public: bool = typer.Option(False, "--public/--private", help="Anyone may pull."),
    db: str = DbOption,
) -> None:
    """Create (or make public/private) a namespace owned by a user."""
    with user_errors():
        _identity(db).add_namespace(name, owner, public)
    console.print(f"namespace {name} owned by {owner} ({'public' if public else 'private'})")


@app.command("grant")
def grant(
    namespace_: str = typer.Argument(..., metavar="NAMESPACE"),
    username: str = typer.Argument(...),
    actions: str = typer.Option("pull", "--actions", help="Comma list: pull, push, delete."),
    db: str = DbOption,
) -> None:
    """Let USERNAME pull (and push) in another user's NAMESPACE."""
    with user_errors():
        _identity(db).grant(namespace_, username, actions.split(","))
    console.print(f"{username} may {actions} in {namespace_}/")


@app.command("visibility")
def visibility(
    repository: str,
    public: bool = typer.Option(..., "--public/--private"),
    db: str = DbOption,
) -> None:
    """Make one repository public (anonymous pull) or private."""
    with user_errors():
        _identity(db).set_public(repository, public)
    console.print(f"{repository} is {'public' if public else 'private'}")


@token_app.command("create")
def token_create(
    username: str,
    name: str = typer.Option(..., "--name", help="What the token is for."),
    scope: list[str] = typer.Option(
        ["pull", "push"],
        "--scope",
        help="pull, push, delete, or repository:NAME:ACTIONS (NAME may end in /*). Repeatable.",
    ),
    expires_days: int = typer.Option(90, "--expires-days", help="0 = never expires."),
    db: str = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a token; its secret is printed once and only stored hashed."""
    with user_errors():
        expires = dt.timedelta(days=expires_days) if expires_days > 0 else None
        if expires_days < 0:
            raise UsageError("--expires-days: use 0 (never) or a positive number")
        token_id, secret = _identity(db).create_token(username, name, scope, expires)
    emit(
        as_json,
        {"id": token_id, "secret": secret},
        lambda: console.print(
            f"token {token_id}: {secret}\n(shown once: store it now)", highlight=False
        ),
    )


@token_app.command("ls")
def token_ls(
    user: str = typer.Option(None, "--user"), db: str = DbOption, as_json: bool = JsonOption
) -> None:
    """List tokens (never their secrets)."""
    with user_errors():
        tokens = _identity(db).tokens(user)
    rows = [
        {
            "id": t.id,
            "user": t.username,
            "name": t.name,
            "scopes": list(t.scopes),
            "expires_at": t.expires_at,
            "revoked": t.revoked_at is not None,
            "last_used_at": t.last_used_at,
        }
        for t in tokens
    ]
    emit(
        as_json,
        rows,
        lambda: print_table(
            None,
            ["id", "user", "name", "scopes", "expires", "revoked", "last used"],
            [
                [
                    r["id"],
                    r["user"],
                    r["name"],
                    " ".join(r["scopes"]),
                    r["expires_at"],
                    r["revoked"],
                    r["last_used_at"],
                ]
                for r in rows
            ],
        ),
    )


@token_app.command("revoke")
def token_revoke(token_id: str, db: str = DbOption) -> None:
    """Revoke a token at once."""
    with user_errors():
        _identity(db).revoke_token(token_id)
    console.print(f"token {token_id} revoked")
