"""The build queue on SQLite: numbering, joining, claiming, cancel, retry,
crash recovery; logs; webhook deduplication; URL polling state."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from asterfleet.errors import UsageError
from asterfleet.factory import queue
from asterfleet.factory.db import open_store
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.logs import BuildLog, read_log, redact, stream_log
from asterfleet.factory.polling import poll_url
from asterfleet.factory.store import add_knot, edit_knot, get_knot, list_knots, remove_knot
from asterfleet.factory.web import handle_delivery


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    add_knot(
        eng,
        validate_knot(
            {
                "name": "app",
                "git_url": "/srv/app",
                "repository": "alice/app",
                "tag_pattern": "v*",
                "triggers": {"webhook_secret": "s", "url": "http://x.test/r"},
            }
        ),
    )
    return eng


def test_builds_are_numbered_per_knot_and_join_while_queued(engine: Engine) -> None:
    add_knot(engine, validate_knot({"name": "other", "git_url": "/o", "repository": "a/o"}))
    a = queue.enqueue(engine, "app", "refs/heads/main", "1" * 40, "webhook:github")
    b = queue.enqueue(engine, "app", "refs/heads/main", "2" * 40, "poll:git")
    c = queue.enqueue(engine, "app", "refs/tags/v1", None, "manual")
    d = queue.enqueue(engine, "other", "refs/heads/main", None, "manual")
    assert (a.build.number, b.build.number, c.build.number, d.build.number) == (1, 1, 2, 1)
    assert b.joined and b.build.sha == "2" * 40
    assert b.build.triggers == ("webhook:github", "poll:git")
    # Once running, a new trigger queues a new build.
    claimed = queue.claim(engine, "w/0")
    assert claimed is not None and claimed.id == a.build.id and claimed.state == "running"
    e = queue.enqueue(engine, "app", "refs/heads/main", None, "manual")
    assert not e.joined and e.build.number == 3


def test_claim_order_cancel_and_retry(engine: Engine) -> None:
    first = queue.enqueue(engine, "app", "refs/heads/main", None, "t").build
    second = queue.enqueue(engine, "app", "refs/tags/v2", None, "t").build
    assert queue.cancel(engine, "app", second.number).state == "cancelled"
    got = queue.claim(engine, "w/0")
    assert got is not None and got.id == first.id
    assert queue.claim(engine, "w/1") is None
    queue.cancel(engine, "app", first.number)
    assert queue.heartbeat(engine, first.id) is True, "the worker sees the cancel request"
    queue.set_state(engine, first.id, "failed", reason="boom")
    with pytest.raises(UsageError, match="already finished"):
        queue.cancel(engine, "app", first.number)
    again = queue.retry(engine, "app", first.number)
    assert again.build.number == 3 and again.build.triggers == ("retry:#1",)
    with pytest.raises(UsageError, match="only finished builds retry"):
        queue.retry(engine, "app", 3)


def test_recovery_fails_interrupted_builds_only(engine: Engine) -> None:
    mine = queue.enqueue(engine, "app", "refs/heads/main", None, "t").build
    theirs = queue.enqueue(engine, "app", "refs/tags/v1", None, "t").build
    queue.claim(engine, "me/0")
    queue.claim(engine, "other/0")
    waiting = queue.enqueue(engine, "app", "refs/heads/main", None, "t").build
    failed = queue.recover(engine, own_workers=("me/0",))
    assert [b.id for b in failed] == [mine.id]
    assert queue.build_by_id(engine, theirs.id).state == "running"
    assert queue.build_by_id(engine, waiting.id).state == "queued"
    stale = queue.recover(engine, stale_after=dt.timedelta(seconds=-1))
    assert [b.id for b in stale] == [theirs.id]
    assert "heartbeats" in (queue.build_by_id(engine, theirs.id).reason or "")


def test_logs_resume_by_offset_and_hide_secrets(engine: Engine) -> None:
    build = queue.enqueue(engine, "app", "refs/heads/main", None, "t").build
    log = BuildLog(engine, build.id, secrets=["hunter2"])
    log.line("cloning https://bob:pw@git.example/x.git")
    log.line("password is hunter2")
    text, end = read_log(engine, build.id)
    assert "hunter2" not in text and "bob:pw" not in text and "********" in text
    assert read_log(engine, build.id, end) == ("", end)
    assert read_log(engine, build.id, 4)[0] == text[4:]
    # A second writer (a restarted worker) continues at the end.
    BuildLog(engine, build.id).line("more")
    assert read_log(engine, build.id, end)[0] == "more\n"
    queue.set_state(engine, build.id, "passed")

    async def collect() -> list[tuple[int, str]]:
        return [item async for item in stream_log(engine, build.id, offset=end, poll=0.01)]

    assert asyncio.run(collect()) == [(end + 5, "more\n")]


def test_redact_url_credentials() -> None:
    assert redact("git clone https://u:p@h/x", []) == "git clone https://********@h/x"


def _github(body: bytes, delivery: str) -> dict[str, str]:
    sig = hmac.new(b"s", body, hashlib.sha256).hexdigest()
    return {
        "x-github-event": "push",
        "x-github-delivery": delivery,
        "x-hub-signature-256": f"sha256={sig}",
    }


def test_webhook_handling(engine: Engine) -> None:
    body = json.dumps({"ref": "refs/tags/v3", "after": "c" * 40}).encode()
    status, content = handle_delivery(engine, "app", _github(body, "1"), body)
    assert (status, content["build"], content["joined"]) == (202, 1, False)
    assert handle_delivery(engine, "app", _github(body, "1"), body)[1]["ignored"]
    assert handle_delivery(engine, "nope", _github(body, "2"), body)[0] == 404
    assert (
        handle_delivery(engine, "app", {**_github(body, "3"), "x-hub-signature-256": "x"}, body)[0]
        == 401
    )
    other = json.dumps({"ref": "refs/tags/release", "after": "c" * 40}).encode()
    assert (
        "does not match" in handle_delivery(engine, "app", _github(other, "4"), other)[1]["ignored"]
    )


def test_a_replayed_delivery_with_a_new_id_builds_nothing(engine: Engine) -> None:
    body = json.dumps({"ref": "refs/tags/v3", "after": "c" * 40}).encode()
    assert handle_delivery(engine, "app", _github(body, "1"), body)[0] == 202
    queue.set_state(engine, queue.get_build(engine, "app", 1).id, "passed")
    # The delivery id is outside the signature: an attacker who saw one
    # delivery can send it again under any id.
    for replay_id in ("2", "3"):
        status, content = handle_delivery(engine, "app", _github(body, replay_id), body)
        assert (status, content["ignored"]) == (200, "repeated delivery")
    assert [b.number for b in queue.list_builds(engine, "app")] == [1]
    # A new commit on the same ref is a new delivery.
    newer = json.dumps({"ref": "refs/tags/v3", "after": "d" * 40}).encode()
    assert handle_delivery(engine, "app", _github(newer, "4"), newer)[0] == 202


def test_url_polling_state_survives_restart(engine: Engine, tmp_path: Path) -> None:
    served = {"body": b"v1", "etag": '"1"'}
    seen_headers: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_headers.append(dict(request.headers))
        if request.headers.get("if-none-match") == served["etag"]:
            return httpx.Response(304)
        return httpx.Response(200, content=served["body"], headers={"ETag": served["etag"]})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    knot = get_knot(engine, "app")
    assert poll_url(engine, knot, client) is False, "first sight only records"
    restarted = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    assert poll_url(restarted, knot, client) is False
    assert seen_headers[-1]["if-none-match"] == '"1"'
    served.update(body=b"v2", etag='"2"')
    assert poll_url(restarted, knot, client) is True
    assert poll_url(restarted, knot, client) is False


def test_knot_store_edit_and_remove(engine: Engine) -> None:
    knot = edit_knot(engine, "app", {"test_command": "true", "triggers": {"git_poll_seconds": 60}})
    assert knot.test_command == "true" and knot.triggers.webhook_secret == "s"
    with pytest.raises(UsageError, match="knot repository"):
        edit_knot(engine, "app", {"repository": "nope"})
    with pytest.raises(UsageError, match="already exists"):
        add_knot(engine, knot)
    queue.enqueue(engine, "app", "refs/heads/main", None, "t")
    queue.claim(engine, "w")
    with pytest.raises(UsageError, match="running"):
        remove_knot(engine, "app")
    queue.cancel(engine, "app", 1)
    queue.set_state(engine, queue.get_build(engine, "app", 1).id, "cancelled")
    remove_knot(engine, "app")
    assert list_knots(engine) == []
