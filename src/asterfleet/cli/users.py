"""`asterfleet users ...`: the one identity from the shell: users, their API
tokens (console and registry) and the registry's namespaces and grants."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from asterfleet.cli.common import (
    JsonOption,
    console,
    emit,
    err_console,
    print_table,
    user_errors,
)
from asterfleet.errors import UsageError

if TYPE_CHECKING:
    from asterfleet.db import Database

ENV = "ASTERFLEET_"

app = typer.Typer(
    help=(
        "Users, API tokens and registry grants: one login for the console, its API "
        "and the image registry.\n\n"
        "Users and tokens live in the console's database (--db, ASTERFLEET_CONSOLE_DB); "
        "namespaces, grants and public flags in the factory's (--factory-db, "
        "ASTERFLEET_FACTORY_DB). Each user owns the registry namespace of their name "
        "(alice/…) unless another user already owns a namespace of that name."
    ),
    no_args_is_help=True,
)
token_app = typer.Typer(
    help=(
        "API tokens: `Authorization: Bearer <token>` against /api/v1 (scopes read, write), "
        "for Prometheus on /metrics of the console and the registry (scope metrics) "
        "and the password of registry clients (scopes pull, push, delete, or "
        "repository:NAME:ACTIONS)."
    ),
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

DbOpt = typer.Option(
    None,
    "--db",
    envvar=ENV + "CONSOLE_DB",
    help="The console's database URL or SQLite path [default: ~/.local/state/asterfleet/console.db].",
)
FactoryDbOpt = typer.Option(
    None,
    "--factory-db",
    envvar=ENV + "FACTORY_DB",
    help="The factory's database (registry namespaces and grants) "
    "[default: ~/.local/share/asterfleet/factory.db].",
)
PasswordFileOpt = typer.Option(
    None,
    "--password-file",
    help="Read the password from this file instead of asking (use '-' for stdin).",
)


def _db(url: str | None) -> Database:
    from asterfleet.db import open_database

    return open_database(url)


def _ownership(url: str | None):  # type: ignore[no-untyped-def]
    from asterfleet.factory.db import default_url, open_store
    from asterfleet.registry.ownership import Ownership
    from asterfleet.registry.schema import create_tables

    # ASTERFLEET_DB meant the console's database for `users`, never this one.
    return Ownership(create_tables(open_store(url or default_url(legacy=False), create=False)))


def _password(path: Path | None) -> str:
    if path is not None:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
        except OSError as exc:
            raise UsageError(f"--password-file {path}: cannot read it ({exc.strerror})") from exc
        password = text.strip("\n")
        if not password:
            raise UsageError(f"--password-file {path} is empty: put the password on one line")
        return password
    first = typer.prompt("Password", hide_input=True)
    again = typer.prompt("Again", hide_input=True)
    if first != again:
        raise UsageError("the two passwords differ: try again")
    return str(first)


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "-"


@app.command("add")
def add(
    username: str = typer.Argument(..., help="Lower-case login name."),
    role: str = typer.Option("operator", help="admin, operator (may act) or viewer (looks only)."),
    password_file: Path = PasswordFileOpt,
    db: str = DbOpt,
) -> None:
    """Add a user who can log in to the console."""
    from asterfleet.auth import add_user, check_password_policy
    from asterfleet.auth.users import check_role, check_username

    with user_errors():
        check_username(username)
        check_role(role)
        password = check_password_policy(_password(password_file))
        user = add_user(_db(db), username, password, role)
    console.print(f"added user {user.username} ({user.role})", highlight=False)


@app.command("passwd")
def passwd(
    username: str = typer.Argument(...),
    password_file: Path = PasswordFileOpt,
    db: str = DbOpt,
) -> None:
    """Set a user's password (ends every session of that user)."""
    from asterfleet.auth import get_user, set_password

    with user_errors():
        database = _db(db)
        if get_user(database, username) is None:
            raise UsageError(f"no user {username!r}: see 'asterfleet users ls'")
        set_password(database, username, _password(password_file))
    console.print(f"password of {username} changed", highlight=False)


@app.command("rm")
def rm(
    username: str = typer.Argument(...), db: str = DbOpt, factory_db: str = FactoryDbOpt
) -> None:
    """Remove a user, with their sessions, API tokens, refresh tokens and grants."""
    from asterfleet.auth import remove_user

    with user_errors():
        remove_user(_db(db), username)
        _ownership(factory_db).forget_user(username)
    console.print(f"removed user {username}", highlight=False)


@app.command("ls")
def ls(db: str = DbOpt, as_json: bool = JsonOption) -> None:
    """List users."""
    from asterfleet.auth import list_users

    with user_errors():
        users = list_users(_db(db))
    data = [
        {
            "username": u.username,
            "role": u.role,
            "created_at": u.created_at,
            "last_login_at": u.last_login_at,
        }
        for u in users
    ]
    emit(
        as_json,
        data,
        lambda: print_table(
            None,
            ["user", "role", "created", "last login"],
            [[u.username, u.role, _when(u.created_at), _when(u.last_login_at)] for u in users],
        ),
    )


@token_app.command("create")
def token_create(
    username: str = typer.Argument(..., help="Whose token: it acts as this user."),
    name: str = typer.Option(..., "--name", help="What uses it (a script, a monitor)."),
    scopes: str = typer.Option(
        "read",
        "--scopes",
        help="Comma list of read, write (the console API), metrics (/metrics of the console "
        "and the registry only), pull, push, delete (the registry); or "
        "repository:NAME:pull,push for one "
        "repository (NAME may end in /*).",
    ),
    ttl_days: float = typer.Option(None, "--ttl-days", help="Expire after this many days."),
    db: str = DbOpt,
    as_json: bool = JsonOption,
) -> None:
    """Create an API token and print it once (it is stored only as a hash)."""
    from asterfleet.auth import create_token, get_user, parse_scopes

    with user_errors():
        database = _db(db)
        wanted = parse_scopes(scopes)
        user = get_user(database, username)
        if user is None:
            raise UsageError(f"no user {username!r}: see 'asterfleet users ls'")
        if "write" in wanted and not user.can_act:
            raise UsageError(f"{username} is a viewer: a token can only have scope 'read'")
        if ttl_days is not None and ttl_days <= 0:
            raise UsageError(f"--ttl-days {ttl_days}: use a positive number of days")
        issued = create_token(
            database, username, name, wanted, ttl_days * 86400 if ttl_days else None
        )
    if as_json:
        emit(
            True,
            {
                "id": issued.id,
                "name": issued.name,
                "token": issued.token,
                "scopes": list(issued.scopes),
            },
            lambda: None,
        )
        return
    sys.stdout.write(issued.token + "\n")
    err_console.print(
        f"token {issued.id} ({issued.name}, {','.join(issued.scopes)}) for {username}: "
        "copy it now, it is not shown again",
        highlight=False,
    )


@token_app.command("ls")
def token_ls(
    username: str = typer.Argument(None, help="Only this user's tokens."),
    db: str = DbOpt,
    as_json: bool = JsonOption,
) -> None:
    """List API tokens (never the secrets)."""
    from asterfleet.auth import list_tokens

    with user_errors():
        tokens = list_tokens(_db(db), username)
    data = [
        {
            "id": t.id,
            "user": t.username,
            "name": t.name,
            "prefix": t.prefix,
            "scopes": list(t.scopes),
            "created_at": t.created_at,
            "last_used_at": t.last_used_at,
            "expires_at": t.expires_at,
            "active": t.active,
            "status": t.status,
        }
        for t in tokens
    ]
    emit(
        as_json,
        data,
        lambda: print_table(
            None,
            ["id", "user", "name", "prefix", "scopes", "created", "last used", "expires", "status"],
            [
                [
                    t.id,
                    t.username,
                    t.name,
                    t.prefix + "…",
                    ",".join(t.scopes),
                    _when(t.created_at),
                    _when(t.last_used_at) if t.last_used_at else "never",
                    _when(t.expires_at) if t.expires_at else "never",
                    t.status,
                ]
                for t in tokens
            ],
        ),
    )


@token_app.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="The id from 'token ls'."), db: str = DbOpt
) -> None:
    """Revoke a token: scripts using it get 401 from now on."""
    from asterfleet.auth import revoke_token

    with user_errors():
        info = revoke_token(_db(db), token_id)
    console.print(f"revoked token {info.id} ({info.name}) of {info.username}", highlight=False)


@app.command("namespace")
def namespace(
    name: str = typer.Argument(..., help="The first path component: NAME/app."),
    owner: str = typer.Option(..., "--owner", help="The user who may pull, push, delete."),
    public: bool = typer.Option(False, "--public/--private", help="Anyone may pull."),
    db: str = DbOpt,
    factory_db: str = FactoryDbOpt,
) -> None:
    """Give a registry namespace to a user (or make it public/private)."""
    from asterfleet.auth import get_user

    with user_errors():
        if get_user(_db(db), owner) is None:
            raise UsageError(f"no user {owner!r}: see 'asterfleet users ls'")
        other = get_user(_db(db), name)
        if other is not None and other.username != owner:
            raise UsageError(f"namespace {name!r} is user {name}'s own: pick another name")
        _ownership(factory_db).add_namespace(name, owner, public)
    console.print(
        f"namespace {name} owned by {owner} ({'public' if public else 'private'})",
        highlight=False,
    )


@app.command("grant")
def grant(
    namespace_: str = typer.Argument(..., metavar="NAMESPACE"),
    username: str = typer.Argument(...),
    actions: str = typer.Option("pull", "--actions", help="Comma list: pull, push, delete."),
    db: str = DbOpt,
    factory_db: str = FactoryDbOpt,
) -> None:
    """Let USERNAME pull (push, delete) in another user's registry NAMESPACE."""
    from asterfleet.auth import get_user

    with user_errors():
        if get_user(_db(db), username) is None:
            raise UsageError(f"no user {username!r}: see 'asterfleet users ls'")
        _ownership(factory_db).grant(namespace_, username, actions.split(","))
    console.print(f"{username} may {actions} in {namespace_}/", highlight=False)


@app.command("grants")
def grants(factory_db: str = FactoryDbOpt, as_json: bool = JsonOption) -> None:
    """List registry grants."""
    with user_errors():
        rows = _ownership(factory_db).grants()
    emit(
        as_json,
        rows,
        lambda: print_table(
            None,
            ["namespace", "user", "actions"],
            [[r["namespace"], r["user"], r["actions"]] for r in rows],
        ),
    )


@app.command("visibility")
def visibility(
    repository: str = typer.Argument(..., help="NAMESPACE/NAME"),
    public: bool = typer.Option(..., "--public/--private"),
    factory_db: str = FactoryDbOpt,
) -> None:
    """Make one registry repository public (anonymous pull) or private."""
    with user_errors():
        _ownership(factory_db).set_public(repository, public)
    console.print(f"{repository} is {'public' if public else 'private'}", highlight=False)


@app.command("import-registry")
def import_registry(
    source: str = typer.Option(
        ...,
        "--from",
        help="The factory's database that held the registry's former users (reg_users).",
    ),
    db: str = DbOpt,
) -> None:
    """Carry the registry's former users and afp_ tokens into this identity.

    The console's database does this by itself when both share one database;
    run this once when they were separate. Existing users and tokens are kept.
    """
    from asterfleet.db.legacy import carry_over
    from asterfleet.storage import open_engine

    with user_errors():
        database = _db(db)
        legacy = open_engine(source, "--from")
        with legacy.connect() as src, database.engine.begin() as dst:
            done = carry_over(src, dst)
        legacy.dispose()
    console.print(f"carried over {done.users} user(s), {done.tokens} token(s)", highlight=False)
    for skipped in done.skipped:
        err_console.print(f"skipped {skipped}", highlight=False)
