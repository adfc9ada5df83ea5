"""The Images area: the registry's repositories and tags, a tag's layers,
its Dockerfile and the build that produced it, the pull command; owners
delete tags. Everything shown is filtered by what the user may pull."""

from __future__ import annotations

import asyncio
import functools
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from pygments import highlight  # type: ignore[import-untyped]
from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]
from pygments.lexers import DockerLexer  # type: ignore[import-untyped]

from asterfleet.console.factory_state import FactoryState, factory_state
from asterfleet.console.security import Principal, page_user
from asterfleet.console.web import render
from asterfleet.factory.dockerfiles import dockerfile_of
from asterfleet.registry.catalogue import list_repositories, list_tags, pull_command, tag_detail
from asterfleet.registry.identity import access_view
from asterfleet.registry.scope import REPOSITORY_RE, AccessView, Scope, granted_actions

router = APIRouter(include_in_schema=False)
log = structlog.get_logger("asterfleet.console.images")

_FORMATTER = HtmlFormatter(cssclass="highlight", linenos=False)
PULL_TOOLS = ("docker", "podman", "buildah")


def highlight_dockerfile(text: str) -> Markup:
    """The Dockerfile as HTML with Pygments classes (styled by /images/highlight.css)."""
    return Markup(highlight(text, DockerLexer(), _FORMATTER))  # Pygments escapes the text


@functools.cache
def highlight_css() -> str:
    return str(_FORMATTER.get_style_defs(".highlight"))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _view(fs: FactoryState, user: Principal, repositories: list[str]) -> AccessView:
    return access_view(fs.identity, fs.registry_principal(user.username, user.role), repositories)


def _check_name(repository: str) -> None:
    if not REPOSITORY_RE.match(repository):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no repository {repository!r}")


def _may(view: AccessView, repository: str, action: str) -> bool:
    return bool(granted_actions(view, Scope("repository", repository, (action,))))


@router.get("/images/highlight.css")
async def highlight_stylesheet() -> Response:
    return Response(highlight_css(), media_type="text/css")


@router.get("/images")
async def repositories_page(
    request: Request,
    msg: str = "",
    err: str = "",
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    def load() -> list[dict[str, Any]]:
        everything = list_repositories(fs.engine)
        view = _view(fs, user, [r["name"] for r in everything])
        return [r for r in everything if _may(view, r["name"], "pull")]

    repos = await asyncio.to_thread(load)
    return render(
        request,
        "images.html",
        user,
        area="images",
        repositories=repos,
        registry_host=fs.registry_host,
        msg=msg,
        err=err,
    )


@router.post("/images/{repository:path}/tags/{tag}/delete")
async def delete_tag(
    request: Request,
    repository: str,
    tag: str,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    _check_name(repository)
    view = await asyncio.to_thread(_view, fs, user, [repository])
    if not _may(view, repository, "delete"):
        log.info("tag_delete_refused", repository=repository, tag=tag, user=user.username)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{user.username} may not delete tags of {repository}: only its namespace's "
            "owner (or a user granted delete) may",
        )
    back = "/images/" + quote(repository)
    try:
        await asyncio.to_thread(fs.catalogue.delete_tag, repository, tag)
    except httpx.HTTPError as exc:
        log.warning("tag_delete_failed", repository=repository, tag=tag, error=str(exc))
        return RedirectResponse(
            f"{back}?err={quote(f'deleting {repository}:{tag} failed: {exc}')}", status_code=303
        )
    log.info("tag_deleted", repository=repository, tag=tag, user=user.username)
    return RedirectResponse(f"{back}?msg={quote(f'{repository}:{tag} deleted')}", status_code=303)


@router.get("/images/{repository:path}/tags/{tag}")
async def tag_page(
    request: Request,
    repository: str,
    tag: str,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    _check_name(repository)

    def load() -> tuple[AccessView, dict[str, Any] | None, tuple[str, str] | None]:
        view = _view(fs, user, [repository])
        if not _may(view, repository, "pull"):
            return view, None, None
        detail = tag_detail(fs.engine, repository, tag)
        build = detail["build"] if detail else None
        dockerfile = dockerfile_of(fs.engine, build["id"]) if build else None
        return view, detail, dockerfile

    view, detail, dockerfile = await asyncio.to_thread(load)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no tag {repository}:{tag}")
    pulls = {t: pull_command(fs.registry_host, repository, tag, t) for t in PULL_TOOLS}
    by_digest = f"{fs.registry_host}/{repository}@{detail['digest']}"
    return render(
        request,
        "image_tag.html",
        user,
        area="images",
        repository=repository,
        t=detail,
        size=human_size(detail["size"]),
        layers=[{**la, "human": human_size(int(la["size"]))} for la in detail["layers"]],
        pulls=pulls,
        by_digest=by_digest,
        dockerfile_path=dockerfile[0] if dockerfile else None,
        dockerfile_html=highlight_dockerfile(dockerfile[1]) if dockerfile else None,
        may_delete=_may(view, repository, "delete"),
    )


@router.get("/images/{repository:path}")
async def repository_page(
    request: Request,
    repository: str,
    msg: str = "",
    err: str = "",
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    _check_name(repository)

    def load() -> tuple[AccessView, list[dict[str, Any]]]:
        view = _view(fs, user, [repository])
        if not _may(view, repository, "pull"):
            return view, []
        return view, list_tags(fs.engine, repository)

    view, tags = await asyncio.to_thread(load)
    if not tags and not _may(view, repository, "pull"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no repository {repository!r}")
    return render(
        request,
        "image_repository.html",
        user,
        area="images",
        repository=repository,
        tags=[{**t, "human": human_size(t["size"])} for t in tags],
        may_delete=_may(view, repository, "delete"),
        registry_host=fs.registry_host,
        msg=msg,
        err=err,
    )
