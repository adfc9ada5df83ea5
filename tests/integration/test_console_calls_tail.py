"""The Calls list's live tail through a running console on PostgreSQL, as
the browser's EventSource uses it: each event stream says where it is
(``id:``); a reconnect sends that back (``Last-Event-ID``) and misses
nothing; a position the console cannot go on from starts the tail from now
and says so, never an error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asterfleet.capture.store import Store
from asterfleet.testing.postgres import PgSandbox
from tests.integration.test_capture_fleet import logged_in
from tests.integration.test_capture_tail import invite
from tests.integration.test_console_calls_list import console_with_capture

pytestmark = pytest.mark.integration

PASSWORD = "calls-tail-admin-pass"


@pytest.fixture
def signed_in(tmp_path: Path, postgres: PgSandbox) -> Iterator[tuple[httpx.Client, Store]]:
    """A console on a PostgreSQL capture store, a client signed in to it,
    and the store (as a collector writes it)."""
    store = Store(postgres.url)
    try:
        for url in console_with_capture(tmp_path, postgres.url, PASSWORD):
            client = logged_in(url, PASSWORD)
            try:
                yield client, store
            finally:
                client.close()
    finally:
        store.close()


def read_stream(
    client: httpx.Client,
    store: Store,
    insert: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    restarts: bool = False,
) -> tuple[list[str], list[str], str]:
    """Read ``/calls/live``; once the stream has said where it is (after
    its ``restarted`` note when it ``restarts``), store the call ``insert``;
    go on until the stream has sent that call and its next position. The
    Call-IDs of the rows, the notes, and the last ``id:``."""
    calls: list[str] = []
    notes: list[str] = []
    last_id = ""
    event = ""
    stored = False
    deadline = time.monotonic() + 30
    with client.stream("GET", "/calls/live", headers=headers, params=params) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                event = ""
            elif line.startswith("id: "):
                last_id = line[4:]
                if insert in calls:
                    return calls, notes, last_id
                if not stored and (notes or not restarts):
                    store.insert_rows([invite(insert)])
                    stored = True
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "restarted":
                notes.append(line[6:])
            elif line.startswith("data: ") and event == "call" and "data-call-id=" in line:
                calls.append(line.split('data-call-id="', 1)[1].split('"', 1)[0])
            assert time.monotonic() < deadline, f"no call {insert!r} in the live tail: {calls}"
    raise AssertionError("the live tail ended")


def test_a_reconnecting_tail_goes_on_where_it_was(signed_in: tuple[httpx.Client, Store]) -> None:
    client, store = signed_in
    # A position no console gave (here an id, as a browser kept from the
    # version before): the tail says so and goes on from now.
    store.insert_rows([invite("before-call")])
    calls, notes, position = read_stream(
        client, store, "first-call", {"Last-Event-ID": "51234"}, restarts=True
    )
    assert calls == ["first-call"]
    assert len(notes) == 1 and "'51234' is not one this console gave" in notes[0]
    # Away: calls stored meanwhile come with the reconnect, once each.
    store.insert_rows([invite("while-away-1")])
    store.insert_rows([invite("while-away-2")])
    calls, notes, position = read_stream(client, store, "back-call", {"Last-Event-ID": position})
    assert calls == ["while-away-1", "while-away-2", "back-call"] and not notes
    # A page's own start position that is not one either: the same.
    calls, notes, _ = read_stream(
        client, store, "third-call", params={"after": "x:y"}, restarts=True
    )
    assert calls == ["third-call"] and len(notes) == 1
