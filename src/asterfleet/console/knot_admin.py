"""Adding, editing and removing knots: the console's forms and the JSON API
(``/api/v1/knots``).

Both validate through :func:`asterfleet.factory.knot_input.validate_input`
/ :func:`asterfleet.factory.knot.validate_knot`, the code the CLI uses, and
store through :mod:`asterfleet.factory.store`, the store the CLI uses.

Who may do what: operators (and admins) add knots, into image repositories
they may push to; only admins and a knot's owners edit or remove it. A
webhook secret is write-only: shown once when it is generated, never after.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import FormData

from asterfleet.auth import get_user, password_principal
from asterfleet.console.factory_state import FactoryState, factory_state
from asterfleet.console.knot_access import may_add, may_edit, may_see
from asterfleet.console.security import (
    API_ERRORS,
    ErrorOut,
    Principal,
    api_reader,
    api_writer,
    page_user,
)
from asterfleet.console.web import render
from asterfleet.errors import UsageError
from asterfleet.factory.knot import Knot, KnotInvalid, admin_only_changes, validate_knot
from asterfleet.factory.knot_input import (
    GENERATE,
    MASK,
    KnotInput,
    mask_url_credentials,
    public_spec,
    resolve_secret_build_args,
    resolve_webhook_secret,
    to_input,
    validate_input,
)
from asterfleet.factory.store import add_knot, edit_knot, get_knot, list_knots, remove_knot

log = structlog.get_logger("asterfleet.console.knots")
pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1", tags=["knots"], responses=API_ERRORS)
router = APIRouter()  # the area's router: pages first (before /knots/{name})

PROVIDERS = ("github", "gitea", "gitlab")
FORM_FIELDS = frozenset(f.name for f in dataclasses.fields(KnotInput))


# -- who may -------------------------------------------------------------------


def push_problem(fs: FactoryState, user: Principal, repository: str) -> str | None:
    """Why ``user`` may not point a knot at ``repository``, or None.

    The worker pushes with its own credentials: without this check any
    operator could publish into anyone's namespace through a knot.
    """
    # The user's own rights, not a token's: a knot hands pushing to the worker,
    # which checks again before every push.
    if fs.ownership.may(dataclasses.replace(user, token_id=None), repository, "push"):
        return None
    return (
        f"{user.username} may not push to {repository}: use a namespace you own "
        f"({user.username}/…) or were granted push in"
    )


def _forbidden(message: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, message)


def _require_add(user: Principal) -> None:
    if not may_add(user):
        raise _forbidden(
            f"{user.username} may not add knots: needs role operator or admin"
            + (" and a token with scope 'write'" if user.via == "api" else "")
        )


def _require_edit(user: Principal, knot: Knot) -> None:
    if not may_edit(user, knot):
        raise _forbidden(
            f"{user.username} may not change knot {knot.name}: ask one of its owners "
            f"({', '.join(knot.owners) or 'none'}) or an admin"
        )


def _load(fs: FactoryState, name: str) -> Knot:
    try:
        return get_knot(fs.engine, name)
    except UsageError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


# -- saving (shared by the forms and the API) -----------------------------------


def owners_problem(fs: FactoryState, knot: Knot) -> str | None:
    """Why the knot's owners may not stand for its pushes, or None.

    The worker pushes as an owner: each listed owner must be a user who may
    push to the repository, so a knot's creator cannot pick just anyone.
    """
    for name in knot.owners:
        owner = get_user(fs.identity, name)
        if owner is None:
            return f"owner {name!r} is not a user: see 'asterfleet users ls'"
        principal = password_principal(owner.username, owner.role, via="service")
        if not fs.ownership.may(principal, knot.repository, "push"):
            return (
                f"owner {name} may not push to {knot.repository}: list only owners "
                "who own its namespace or were granted push in it"
            )
    return None


def _check_repository(fs: FactoryState, user: Principal, knot: Knot, before: Knot | None) -> None:
    if user.role != "admin" and (problems := admin_only_changes(knot, before)):
        raise KnotInvalid(problems)
    # Also on every edit, the repository unchanged or not: an edit (a new git
    # URL, a new Dockerfile) changes what the worker pushes there.
    problem = push_problem(fs, user, knot.repository)
    if problem:
        raise KnotInvalid({"repository": problem})
    problem = owners_problem(fs, knot)
    if problem:
        raise KnotInvalid({"owners": problem})


def save_new(fs: FactoryState, user: Principal, knot: Knot) -> None:
    _check_repository(fs, user, knot, None)
    try:
        add_knot(fs.engine, knot)
    except KnotInvalid:
        raise
    except UsageError as exc:  # already exists
        raise KnotInvalid({"name": str(exc)}) from None


def save_edit(fs: FactoryState, user: Principal, before: Knot, knot: Knot) -> Knot:
    if knot.git_url != before.git_url and knot.git_url == mask_url_credentials(before.git_url):
        knot = knot.model_copy(update={"git_url": before.git_url})  # shown masked, kept
    _check_repository(fs, user, knot, before)
    # Every field, nested ones whole: the stored knot becomes exactly ``knot``.
    return edit_knot(fs.engine, before.name, knot.model_dump(mode="json"))


# -- forms ---------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def form_input(form: FormData, name: str | None = None) -> KnotInput:
    """The knot form's fields (``name`` is fixed when editing)."""

    def text(key: str, default: str = "") -> str:
        value = form.get(key, default)
        return value if isinstance(value, str) else default

    return KnotInput(
        name=name if name is not None else text("name"),
        git_url=text("git_url"),
        repository=text("repository"),
        branch=text("branch"),
        tag_pattern=text("tag_pattern"),
        dockerfile=text("dockerfile"),
        context=text("context"),
        tag_rules=_lines(text("tag_rules")),
        latest="latest" in form,
        sha_tag="sha_tag" in form,
        build_args=_lines(text("build_args")),
        secret_build_args=_lines(text("secret_build_args")),
        test_command=text("test_command"),
        owners=re.split(r"[\s,]+", text("owners").strip()) if text("owners").strip() else [],
        webhook="webhook" in form,
        webhook_provider=text("webhook_provider"),
        git_poll_seconds=text("git_poll_seconds"),
        poll_url=text("poll_url"),
        poll_url_seconds=text("poll_url_seconds"),
        deploy_webhook=text("deploy_webhook"),
        deploy_command=text("deploy_command"),
        notify_url=text("notify_url"),
        deploy_rollout=text("deploy_rollout"),
        builder=text("builder", "buildah"),
    )


def secret_lines(f: KnotInput, stored: Knot | None) -> list[str]:
    """The secret build args as the form shows them again: NAME=******** for
    a value that is stored, NAME= for one typed but not saved (never a value)."""
    kept = stored.secret_build_args if stored else {}
    out = []
    for line in f.secret_build_args:
        name, _, value = line.partition("=")
        name = name.strip()
        out.append(f"{name}={MASK}" if name in kept and value in (MASK, kept[name]) else f"{name}=")
    return out


def _form(
    request: Request,
    user: Principal,
    f: KnotInput,
    *,
    editing: Knot | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "knot_form.html",
        user,
        area="knots",
        f=f,
        secret_build_args=secret_lines(f, editing),
        editing=editing,
        has_secret=bool(editing and editing.triggers.webhook_secret),
        errors=errors or {},
        other_errors={k: v for k, v in (errors or {}).items() if k not in FORM_FIELDS},
        err="Fix the fields marked below." if errors else "",
        providers=PROVIDERS,
        status_code=status.HTTP_400_BAD_REQUEST if errors else 200,
    )


def _saved(
    request: Request, user: Principal, knot: Knot, secret: str | None, what: str
) -> Response:
    if secret is None:
        return RedirectResponse(f"/knots/{knot.name}?msg={quote(f'knot {what}')}", 303)
    hook_url = str(request.base_url).rstrip("/") + f"/hooks/knots/{knot.name}"
    response = render(
        request, "knot_secret.html", user, area="knots", knot=knot, secret=secret, hook_url=hook_url
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.get("/knots/new")
async def add_page(
    request: Request,
    user: Principal = Depends(page_user),
    _fs: FactoryState = Depends(factory_state),
) -> Response:
    _require_add(user)
    blank = KnotInput(owners=[user.username], tag_rules=["branch:*={name}", "tag:*={name}"])
    return _form(request, user, blank)


@pages.post("/knots/new")
async def add_submit(
    request: Request,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    _require_add(user)
    f = form_input(await request.form())
    secret, _ = resolve_webhook_secret(GENERATE if f.webhook else None, None)
    try:
        knot = validate_input(f, secret)
        await asyncio.to_thread(save_new, fs, user, knot)
    except KnotInvalid as exc:
        return _form(request, user, f, errors=exc.errors)
    log.info("knot_added", knot=knot.name, repository=knot.repository, user=user.username)
    return _saved(request, user, knot, secret, "added")


@pages.get("/knots/{name}/edit")
async def edit_page(
    request: Request,
    name: str,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    knot = await asyncio.to_thread(_load, fs, name)
    _require_edit(user, knot)
    return _form(request, user, to_input(knot), editing=knot)


@pages.post("/knots/{name}/edit")
async def edit_submit(
    request: Request,
    name: str,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    before = await asyncio.to_thread(_load, fs, name)
    _require_edit(user, before)
    form = await request.form()
    f = form_input(form, name)
    wanted = (GENERATE if "regenerate" in form else MASK) if f.webhook else None
    secret, fresh = resolve_webhook_secret(wanted, before.triggers.webhook_secret)
    try:
        knot = validate_input(f, secret, before.secret_build_args)
        knot = await asyncio.to_thread(save_edit, fs, user, before, knot)
    except KnotInvalid as exc:
        return _form(request, user, f, editing=before, errors=exc.errors)
    log.info("knot_edited", knot=name, user=user.username, new_secret=fresh)
    return _saved(request, user, knot, secret if fresh else None, "saved")


@pages.get("/knots/{name}/remove")
async def remove_page(
    request: Request,
    name: str,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    knot = await asyncio.to_thread(_load, fs, name)
    _require_edit(user, knot)
    return render(request, "knot_remove.html", user, area="knots", knot=knot, error="")


@pages.post("/knots/{name}/remove")
async def remove_submit(
    request: Request,
    name: str,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    knot = await asyncio.to_thread(_load, fs, name)
    _require_edit(user, knot)
    typed = (await request.form()).get("confirm", "")
    error = ""
    if typed != name:
        error = f"Type the knot's name, {name}, to remove it."
    else:
        try:
            await asyncio.to_thread(remove_knot, fs.engine, name)
        except UsageError as exc:
            error = str(exc)
    if error:
        return render(
            request,
            "knot_remove.html",
            user,
            area="knots",
            knot=knot,
            error=error,
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    log.info("knot_removed", knot=name, user=user.username)
    return RedirectResponse(f"/knots?msg={quote(f'knot {name} removed')}", 303)


# -- JSON API -------------------------------------------------------------------


class KnotOut(BaseModel):
    knot: Knot = Field(description="the knot; triggers.webhook_secret reads ******** when set")
    webhook_secret: str | None = Field(
        default=None,
        description="the new webhook secret: only in the response that generated it",
    )
    webhook_url: str | None = Field(default=None, description="where the provider delivers")


class KnotErrorOut(BaseModel):
    detail: str
    errors: dict[str, str] = Field(
        default_factory=dict,
        description="field (as in the knot's JSON) -> problem (none when the body is not JSON)",
    )


_KNOT_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "The knot, as `asterfleet knot show --json` prints it. "
            f"triggers.webhook_secret: null (no webhook), {GENERATE!r} (a new secret, "
            f"returned once), {MASK!r} (keep the current one) or your own secret. "
            f"secret_build_args: NAME -> value, {MASK!r} keeps the stored value."
        ),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Knot"}}},
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": KnotErrorOut, "description": "not a valid knot, or not JSON"}
}


def _out(request: Request, knot: Knot, secret: str | None = None, hooks: bool = True) -> KnotOut:
    return KnotOut(
        knot=Knot.model_validate(public_spec(knot, hooks=hooks)),
        webhook_secret=secret,
        webhook_url=(
            str(request.base_url).rstrip("/") + f"/hooks/knots/{knot.name}"
            if knot.triggers.webhook_secret
            else None
        ),
    )


def _invalid(exc: KnotInvalid) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "errors": exc.errors}, status_code=400)


def _api_knot(body: Any, name: str, before: Knot | None) -> tuple[Knot, str | None]:
    """(validated knot, the webhook secret to show once) from an API body."""
    if not isinstance(body, dict):
        raise KnotInvalid({"knot": "expected a JSON object"})
    if body.get("name", name) != name:
        raise KnotInvalid({"name": "differs from the URL: a knot cannot be renamed"})
    triggers = body.get("triggers")
    triggers = dict(triggers) if isinstance(triggers, dict) else {}
    requested = triggers.get("webhook_secret")
    secret, fresh = resolve_webhook_secret(
        requested if isinstance(requested, str) else None,
        before.triggers.webhook_secret if before else None,
    )
    data = {**body, "name": name, "triggers": {**triggers, "webhook_secret": secret}}
    secrets = body.get("secret_build_args")
    if isinstance(secrets, dict) and all(isinstance(v, str) for v in secrets.values()):
        try:
            data["secret_build_args"] = resolve_secret_build_args(
                secrets, before.secret_build_args if before else {}
            )
        except UsageError as exc:
            raise KnotInvalid({"secret_build_args": str(exc)}) from None
    knot = validate_knot(data)
    return knot, secret if fresh else None


@api.get("/knots", response_model=list[Knot], summary="Every knot (secrets masked)")
async def api_list(
    who: Principal = Depends(api_reader), fs: FactoryState = Depends(factory_state)
) -> Any:
    knots = await asyncio.to_thread(list_knots, fs.engine)
    seen = [k for k in knots if await asyncio.to_thread(may_see, fs, who, k)]
    return [public_spec(k, hooks=may_edit(who, k)) for k in seen]


@api.post(
    "/knots",
    response_model=KnotOut,
    status_code=201,
    summary="Add a knot",
    openapi_extra=_KNOT_BODY,
    responses=_ERRORS,
)
async def api_add(
    request: Request,
    who: Principal = Depends(api_writer),
    fs: FactoryState = Depends(factory_state),
) -> Any:
    """Operators and admins; the image repository must be one they may push to."""
    _require_add(who)
    body = await _json(request)
    try:
        name = body.get("name") if isinstance(body, dict) else None
        knot, secret = _api_knot(body, name if isinstance(name, str) else "", None)
        await asyncio.to_thread(save_new, fs, who, knot)
    except KnotInvalid as exc:
        return _invalid(exc)
    log.info("knot_added", knot=knot.name, repository=knot.repository, user=who.actor)
    return JSONResponse(_out(request, knot, secret).model_dump(mode="json"), status_code=201)


@api.get("/knots/{name}", response_model=KnotOut, summary="One knot (secret masked)")
async def api_get(
    request: Request,
    name: str,
    who: Principal = Depends(api_reader),
    fs: FactoryState = Depends(factory_state),
) -> Any:
    knot = await asyncio.to_thread(_load, fs, name)
    if not await asyncio.to_thread(may_see, fs, who, knot):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no knot {name!r}")
    return _out(request, knot, hooks=may_edit(who, knot))


@api.put(
    "/knots/{name}",
    response_model=KnotOut,
    summary="Replace a knot's definition",
    openapi_extra=_KNOT_BODY,
    responses=_ERRORS,
)
async def api_put(
    request: Request,
    name: str,
    who: Principal = Depends(api_writer),
    fs: FactoryState = Depends(factory_state),
) -> Any:
    """Admins and the knot's owners. Fields left out take their defaults."""
    before = await asyncio.to_thread(_load, fs, name)
    _require_edit(who, before)
    body = await _json(request)
    try:
        knot, secret = _api_knot(body, name, before)
        knot = await asyncio.to_thread(save_edit, fs, who, before, knot)
    except KnotInvalid as exc:
        return _invalid(exc)
    log.info("knot_edited", knot=name, user=who.actor, new_secret=secret is not None)
    return _out(request, knot, secret)


@api.delete(
    "/knots/{name}",
    status_code=204,
    summary="Remove a knot and its build history",
    responses={409: {"model": ErrorOut, "description": "one of its builds is running"}},
)
async def api_delete(
    name: str, who: Principal = Depends(api_writer), fs: FactoryState = Depends(factory_state)
) -> Response:
    """Admins and the knot's owners; refused (409) while one of its builds runs."""
    knot = await asyncio.to_thread(_load, fs, name)
    _require_edit(who, knot)
    try:
        await asyncio.to_thread(remove_knot, fs.engine, name)
    except UsageError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    log.info("knot_removed", knot=name, user=who.actor)
    return Response(status_code=204)


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not JSON") from None


router.include_router(pages)
router.include_router(api)
