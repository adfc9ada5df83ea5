"""A batch is stored once: sent again (its writer died before acknowledging
it, or the commit's answer was lost), it is recognised by its id."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from asterfleet.capture.collector import CollectorSettings, ParsedBatch, _Database
from asterfleet.capture.store import RTCP_TAG, Row, Store
from tests.unit.test_capture_pager import T0, answered

#: One RTCP report block (RTCP_COLUMNS order) of call c1.
REPORT = (
    T0 + 2_000_000, "c1", "ast1", "10.0.0.2", 10001, "10.0.0.1", 10000,
    1111, 201, 2222, 0.0, 0, 1.5, 4.0, 4.4, None,
)  # fmt: skip


def counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        rtcp = conn.exec_driver_sql("SELECT count(*) FROM rtcp_reports").scalar_one()
    return store.count(), int(rtcp)


def test_a_batch_sent_again_is_stored_once(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.db"))
    try:
        batch: list[Row] = [*answered("c1", 0.0, 3.0), (RTCP_TAG, [REPORT])]
        assert store.insert_rows(batch, batch_id=b"b-1") is True
        once = counts(store)
        assert once[0] > 0 and once[1] == 1
        assert store.insert_rows(batch, batch_id=b"b-1") is False
        assert counts(store) == once
        # Another batch, and batches without an id, are stored as ever.
        assert store.insert_rows(answered("c2", 5.0, 3.0), batch_id=b"b-2") is True
        assert store.insert_rows(answered("c3", 9.0, 3.0)) is True
        assert counts(store)[0] == once[0] * 3
        # Forgotten ids no longer hold a batch back.
        assert store.forget_batches(time.time() + 1) == 2
        assert store.insert_rows(batch, batch_id=b"b-1") is True
    finally:
        store.close()


class LostAnswer(Store):
    """Commits the first batch, then says the connection broke (as a commit
    whose answer never came back does)."""

    calls = 0

    def insert_rows(self, *args: Any, **kwargs: Any) -> bool:
        LostAnswer.calls += 1
        fresh = super().insert_rows(*args, **kwargs)
        if LostAnswer.calls == 1:
            raise sqlite3.OperationalError("server closed the connection unexpectedly")
        return fresh


def test_a_commit_whose_answer_was_lost_is_not_stored_twice(tmp_path: Path) -> None:
    url = str(tmp_path / "c.db")
    db = _Database(CollectorSettings(listen=[], db_url=url), threading.Event())
    db._store = LostAnswer(url)
    try:
        rows = answered("c1", 0.0, 3.0)
        stored, dropped, seconds = db.write(ParsedBatch(rows, Counter(), id=b"batch-1"))
        assert (stored, dropped) == (len(rows), 0) and seconds is not None
        assert LostAnswer.calls == 2  # written, then tried again
        assert db.store.count() == len(rows)
    finally:
        db.close()
