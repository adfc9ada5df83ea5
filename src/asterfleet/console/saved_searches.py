"""Saved Calls searches: a user keeps a search under a name and opens it
again (or shares its link) from the Calls page. A saved search is the
page's query string, reduced to the filters the page knows."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from asterfleet.db import Database, SavedSearch, User
from asterfleet.errors import UsageError

MAX_NAME = 64
MAX_PER_USER = 100


@dataclass(frozen=True)
class Saved:
    id: int
    name: str
    query: str  # the query string, without "?"

    @property
    def href(self) -> str:
        return "/calls?" + self.query if self.query else "/calls"


def clean_query(query: str, fields: Iterable[str]) -> str:
    """``query`` with only the known, non-empty filters, in the form's order (pure)."""
    known = list(fields)
    given = dict(parse_qsl(query.lstrip("?"), keep_blank_values=False))
    return urlencode([(k, given[k]) for k in known if given.get(k, "").strip()])


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME:
        raise UsageError(f"search name {name!r}: give 1 to {MAX_NAME} characters")
    return name


def _user_id(s: Session, username: str) -> int:
    found = s.scalar(select(User.id).where(User.username == username))
    if found is None:
        raise UsageError(f"user {username!r} has no account here: sign in with a console user")
    return int(found)


def save(db: Database, username: str, name: str, query: str) -> Saved:
    """Save (or replace) the user's search ``name``."""
    name = check_name(name)
    with db.session() as s:
        uid = _user_id(s, username)
        row = s.scalar(
            select(SavedSearch).where(SavedSearch.user_id == uid, SavedSearch.name == name)
        )
        if row is None:
            count = len(s.scalars(select(SavedSearch.id).where(SavedSearch.user_id == uid)).all())
            if count >= MAX_PER_USER:
                raise UsageError(
                    f"{MAX_PER_USER} saved searches already: delete one before saving {name!r}"
                )
            row = SavedSearch(user_id=uid, name=name, query=query, created_at=time.time())
            s.add(row)
        else:
            row.query = query
        s.flush()
        return Saved(row.id, row.name, row.query)


def list_saved(db: Database, username: str) -> list[Saved]:
    q = (
        select(SavedSearch)
        .join(User, User.id == SavedSearch.user_id)
        .where(User.username == username)
        .order_by(SavedSearch.name)
    )
    with db.session() as s:
        return [Saved(r.id, r.name, r.query) for r in s.scalars(q)]


def remove(db: Database, username: str, saved_id: int) -> bool:
    """Delete one of the user's own saved searches; False when it is not theirs."""
    with db.session() as s:
        uid = _user_id(s, username)
        done = s.execute(
            delete(SavedSearch).where(SavedSearch.id == saved_id, SavedSearch.user_id == uid)
        )
        return bool(getattr(done, "rowcount", 0))
