"""An in-memory stand-in for asterfleet.etcd_client.Etcd, for page-level tests.

Integration tests use a real etcd; these tests check the web layer (CSRF,
sessions, tokens, OpenAPI) without starting processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from asterfleet.etcd_client import KeyValue, Snapshot, WatchEvent, WatchLost
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, NodeState


class FakeEtcd:
    def __init__(self, _endpoints: str = "") -> None:
        self.data: dict[str, KeyValue] = {}
        self.revision = 1

    async def get_prefix(self, prefix: str) -> Snapshot:
        items = [kv for k, kv in sorted(self.data.items()) if k.startswith(prefix)]
        return Snapshot(self.revision, items)

    async def get(self, key: str) -> KeyValue | None:
        return self.data.get(key)

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        self.revision += 1
        self.data[key] = KeyValue(key, value, self.revision, lease or 0)
        return self.revision

    async def delete(self, key: str) -> bool:
        self.revision += 1
        return self.data.pop(key, None) is not None

    async def swap(self, key: str, value: bytes | None, mod_revision: int) -> bool:
        current = self.data.get(key)
        if (current.mod_revision if current else 0) != mod_revision:
            return False
        if value is None:
            await self.delete(key)
        else:
            await self.put(key, value)
        return True

    async def close(self) -> None:
        pass

    @contextlib.asynccontextmanager
    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[asyncio.Queue[WatchEvent | WatchLost]]:
        yield asyncio.Queue()


def put_node(etcd: FakeEtcd, ks: Keyspace, node_id: str, **fields: object) -> NodeRecord:
    rec = NodeRecord.model_validate(
        {
            "id": node_id,
            "sip_uri": f"sip:127.0.0.1:{5070 + len(etcd.data)};transport=udp",
            "state": NodeState.ACTIVE,
            "started_at": 1.0,
            **fields,
        }
    )
    etcd.revision += 1
    etcd.data[ks.node(node_id)] = KeyValue(ks.node(node_id), rec.to_json(), etcd.revision, 7)
    return rec
