"""The browsable catalogue of repositories and tags, kept in our tables.

Level-triggered, like a Kubernetes controller: a registry notification only
names a repository to look at; :meth:`CatalogueSync.sync_repository` reads
the repository's whole state from the registry (tags, manifests, configs)
and makes the tables match. :meth:`CatalogueSync.reconcile` does the same
for every repository in ``/v2/_catalog``, repairing what notifications
missed. Running either twice is harmless.

The query functions at the bottom are what the console renders.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy import Engine, and_, delete, insert, select, update

from asterfleet.factory.db import as_utc, utcnow
from asterfleet.factory.schema import cat_repositories, cat_tags, factory_builds
from asterfleet.registry.scope import REPOSITORY_RE, AccessView, Scope, granted_actions
from asterfleet.registry.tokens import Issuer

log = structlog.get_logger("asterfleet.registry.catalogue")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
SERVICE_SUBJECT = "asterfleet-catalogue"


# -- pure parsing ---------------------------------------------------------------


def repositories_in_notification(envelope: Mapping[str, Any]) -> set[str]:
    """The repositories a Distribution notification envelope touches.

    Pulls change nothing we show; pushes and deletes do. Malformed events
    are skipped (the periodic reconcile catches anything lost).
    """
    touched: set[str] = set()
    events = envelope.get("events")
    if not isinstance(events, list):
        return touched
    for event in events:
        if not isinstance(event, dict) or event.get("action") not in ("push", "delete"):
            continue
        target = event.get("target")
        if not isinstance(target, dict):
            continue
        repo = target.get("repository")
        if isinstance(repo, str) and REPOSITORY_RE.match(repo):
            touched.add(repo)
    return touched


@dataclass(frozen=True)
class TagRecord:
    repository: str
    tag: str
    digest: str
    media_type: str
    size: int
    created: dt.datetime | None
    platforms: tuple[str, ...]
    layers: tuple[dict[str, Any], ...]


def parse_created(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    # Go writes nanoseconds; Python takes at most microseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        frac = "".join(itertools.takewhile(str.isdigit, rest))
        zone = rest[len(frac) :]
        text = f"{head}.{frac[:6]}{zone}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def platform_of(config: Mapping[str, Any]) -> str:
    os_ = config.get("os") or "unknown"
    arch = config.get("architecture") or "unknown"
    variant = config.get("variant")
    return f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"


def describe_manifest(
    repository: str,
    tag: str,
    digest: str,
    media_type: str,
    manifest: Mapping[str, Any],
    config: Mapping[str, Any] | None,
) -> TagRecord:
    """A catalogue row from an image manifest (with its config) or an index."""
    if media_type in INDEX_TYPES:
        found: list[str] = []
        size = 0
        for m in manifest.get("manifests", []):
            size += int(m.get("size", 0))
            p = m.get("platform") or {}
            if p:
                found.append(platform_of(p))
        return TagRecord(repository, tag, digest, media_type, size, None, tuple(found), ())
    layers: tuple[dict[str, Any], ...] = tuple(
        {
            "digest": str(layer.get("digest", "")),
            "size": int(layer.get("size", 0)),
            "media_type": str(layer.get("mediaType", "")),
        }
        for layer in manifest.get("layers", [])
    )
    cfg_desc = manifest.get("config") or {}
    size = int(cfg_desc.get("size", 0)) + sum(int(la["size"]) for la in layers)
    created = parse_created((config or {}).get("created"))
    platforms = (platform_of(config),) if config else ()
    return TagRecord(repository, tag, digest, media_type, size, created, platforms, layers)


# -- talking to the registry ---------------------------------------------------


class RegistryClient:
    """A small Distribution API client that mints its own tokens."""

    def __init__(self, base_url: str, issuer: Issuer, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.issuer = issuer
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _auth(self, *scopes: Scope) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.issuer.issue(SERVICE_SUBJECT, scopes)}

    def _repo_auth(self, repository: str, *actions: str) -> dict[str, str]:
        return self._auth(Scope("repository", repository, actions or ("pull",)))

    def catalog(self, page: int = 500) -> list[str]:
        names: list[str] = []
        auth = self._auth(Scope("registry", "catalog", ("*",)))
        url: str | None = f"/v2/_catalog?n={page}"
        for _ in range(10_000):  # bounded: 5 million repositories
            if url is None:
                break
            resp = self.http.get(url, headers=auth)
            resp.raise_for_status()
            names.extend(resp.json().get("repositories") or [])
            link = resp.headers.get("link", "")
            url = link[link.find("<") + 1 : link.find(">")] if 'rel="next"' in link else None
        return names

    def tags(self, repository: str) -> list[str]:
        resp = self.http.get(f"/v2/{repository}/tags/list", headers=self._repo_auth(repository))
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return list(resp.json().get("tags") or [])

    def manifest(self, repository: str, reference: str) -> tuple[str, str, dict[str, Any]]:
        headers = self._repo_auth(repository) | {"Accept": MANIFEST_ACCEPT}
        resp = self.http.get(f"/v2/{repository}/manifests/{reference}", headers=headers)
        resp.raise_for_status()
        body = resp.json()
        media_type = body.get("mediaType") or resp.headers.get("content-type", "")
        return resp.headers.get("docker-content-digest", ""), media_type, body

    def blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        resp = self.http.get(
            f"/v2/{repository}/blobs/{digest}",
            headers=self._repo_auth(repository),
            follow_redirects=True,
        )
        resp.raise_for_status()
        data: dict[str, Any] = json.loads(resp.content)
        return data

    def delete_manifest(self, repository: str, digest: str) -> None:
        resp = self.http.delete(
            f"/v2/{repository}/manifests/{digest}",
            headers=self._repo_auth(repository, "pull", "delete"),
        )
        if resp.status_code not in (202, 404):
            resp.raise_for_status()


class CatalogueSync:
    """Keeps cat_* tables equal to what the registry holds."""

    def __init__(self, engine: Engine, client: RegistryClient) -> None:
        self.engine = engine
        self.client = client

    def sync_repository(self, repository: str) -> int:
        """Make one repository's rows match the registry; returns its tag count."""
        tags = self.client.tags(repository)
        with self.engine.connect() as conn:
            known = {
                r.tag: r.digest
                for r in conn.execute(
                    select(cat_tags.c.tag, cat_tags.c.digest).where(
                        cat_tags.c.repository == repository
                    )
                )
            }
        records = []
        for tag in tags:
            digest, media_type, manifest = self.client.manifest(repository, tag)
            if known.get(tag) == digest:
                continue
            config = None
            if media_type not in INDEX_TYPES:
                cfg = (manifest.get("config") or {}).get("digest")
                if cfg:
                    config = self.client.blob_json(repository, cfg)
            records.append(describe_manifest(repository, tag, digest, media_type, manifest, config))
        now = utcnow()
        with self.engine.begin() as conn:
            if not tags:
                conn.execute(delete(cat_tags).where(cat_tags.c.repository == repository))
                conn.execute(delete(cat_repositories).where(cat_repositories.c.name == repository))
                return 0
            gone = set(known) - set(tags)
            if gone:
                conn.execute(
                    delete(cat_tags).where(
                        cat_tags.c.repository == repository, cat_tags.c.tag.in_(gone)
                    )
                )
            for rec in records:
                conn.execute(
                    delete(cat_tags).where(
                        cat_tags.c.repository == repository, cat_tags.c.tag == rec.tag
                    )
                )
                conn.execute(
                    insert(cat_tags).values(
                        repository=rec.repository,
                        tag=rec.tag,
                        digest=rec.digest,
                        media_type=rec.media_type,
                        size=rec.size,
                        created=rec.created,
                        platforms=list(rec.platforms),
                        layers=list(rec.layers),
                        updated_at=now,
                    )
                )
            exists = conn.execute(
                select(cat_repositories.c.name).where(cat_repositories.c.name == repository)
            ).first()
            if exists:
                conn.execute(
                    update(cat_repositories)
                    .where(cat_repositories.c.name == repository)
                    .values(updated_at=now)
                )
            else:
                conn.execute(insert(cat_repositories).values(name=repository, updated_at=now))
        log.info("catalogue_synced", repository=repository, tags=len(tags), changed=len(records))
        return len(tags)

    def reconcile(self) -> int:
        """Sync every repository the registry lists and drop the ones it no
        longer does. Returns the number of repositories."""
        names = self.client.catalog()
        for name in names:
            try:
                self.sync_repository(name)
            except httpx.HTTPError as exc:
                log.warning("catalogue_sync_failed", repository=name, error=str(exc))
        with self.engine.begin() as conn:
            stale = [
                r.name
                for r in conn.execute(select(cat_repositories.c.name))
                if r.name not in set(names)
            ]
            if stale:
                conn.execute(delete(cat_tags).where(cat_tags.c.repository.in_(stale)))
                conn.execute(delete(cat_repositories).where(cat_repositories.c.name.in_(stale)))
        return len(names)

    def delete_tag(self, repository: str, tag: str) -> None:
        """Delete a tag's manifest in the registry, then resync the repository.

        Distribution deletes by digest: every tag pointing at it goes too.
        """
        digest, _, _ = self.client.manifest(repository, tag)
        self.client.delete_manifest(repository, digest)
        self.sync_repository(repository)


# -- queries for the console (read-only) -------------------------------------


def list_repositories(engine: Engine, view: AccessView | None = None) -> list[dict[str, Any]]:
    """Repositories with tag counts, filtered to what ``view`` may pull."""
    with engine.connect() as conn:
        repos = conn.execute(select(cat_repositories).order_by(cat_repositories.c.name)).all()
        counts: dict[str, int] = {}
        for r in conn.execute(select(cat_tags.c.repository)):
            counts[r.repository] = counts.get(r.repository, 0) + 1
    out = []
    for r in repos:
        if view is not None and not granted_actions(view, Scope("repository", r.name, ("pull",))):
            continue
        out.append(
            {"name": r.name, "tags": counts.get(r.name, 0), "updated_at": as_utc(r.updated_at)}
        )
    return out


def _tag_dict(row: Any) -> dict[str, Any]:
    return {
        "repository": row.repository,
        "tag": row.tag,
        "digest": row.digest,
        "media_type": row.media_type,
        "size": int(row.size),
        "created": as_utc(row.created),
        "platforms": list(row.platforms),
        "layers": list(row.layers),
    }


def list_tags(engine: Engine, repository: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(cat_tags).where(cat_tags.c.repository == repository).order_by(cat_tags.c.tag)
        )
        return [_tag_dict(r) for r in rows]


def tag_detail(engine: Engine, repository: str, tag: str) -> dict[str, Any] | None:
    """One tag with its layers and the build that produced it (if any)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(cat_tags).where(and_(cat_tags.c.repository == repository, cat_tags.c.tag == tag))
        ).first()
        if row is None:
            return None
        detail = _tag_dict(row)
        build = conn.execute(
            select(factory_builds.c.knot, factory_builds.c.number, factory_builds.c.id)
            .where(factory_builds.c.digest == row.digest)
            .order_by(factory_builds.c.id.desc())
        ).first()
    detail["build"] = (
        {"knot": build.knot, "number": build.number, "id": build.id} if build else None
    )
    return detail


def pull_command(registry_host: str, repository: str, tag: str, tool: str = "docker") -> str:
    return f"{tool} pull {registry_host}/{repository}:{tag}"


def repositories_visible(names: Iterable[str], view: AccessView) -> list[str]:
    return [n for n in names if granted_actions(view, Scope("repository", n, ("pull",)))]
