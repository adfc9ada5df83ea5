"""Parsing Kamailio's dispatcher.list result and JSON-RPC replies (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from asterfleet.errors import RpcError
from asterfleet.kamailio.rpc import (
    DispatcherDestination,
    KamailioRpc,
    RpcCallError,
    _result,
    parse_attrs_body,
    parse_dispatcher_list,
)

# Captured from Kamailio 5.6.3 (jsonrpcs datagram socket), ds_ping_latency_stats=1.
REAL_RESULT: dict[str, Any] = {
    "NRSETS": 1,
    "RECORDS": [
        {
            "SET": {
                "ID": 1,
                "TARGETS": [
                    {
                        "DEST": {
                            "URI": "sip:127.0.0.1:5092",
                            "FLAGS": "DX",
                            "PRIORITY": 5,
                            "ATTRS": {
                                "BODY": "duid=b;weight=0;maxload=0",
                                "DUID": "b",
                                "MAXLOAD": 0,
                                "WEIGHT": 0,
                                "RWEIGHT": 0,
                                "SOCKET": None,
                                "SOCKNAME": None,
                                "OBPROXY": None,
                            },
                            "LATENCY": {"AVG": 0, "STD": 0, "EST": 0, "MAX": 0, "TIMEOUT": 0},
                        }
                    },
                    {
                        "DEST": {
                            "URI": "sip:127.0.0.1:5091",
                            "FLAGS": "AP",
                            "PRIORITY": 0,
                            "ATTRS": {"BODY": "duid=a;weight=60;maxload=10", "DUID": "a"},
                        }
                    },
                ],
            }
        }
    ],
}


def test_parse_real_result() -> None:
    assert parse_dispatcher_list(REAL_RESULT) == [
        DispatcherDestination(
            1, "sip:127.0.0.1:5092", "DX", 5, {"duid": "b", "weight": "0", "maxload": "0"}
        ),
        DispatcherDestination(
            1, "sip:127.0.0.1:5091", "AP", 0, {"duid": "a", "weight": "60", "maxload": "10"}
        ),
    ]


def test_destination_state_helpers() -> None:
    disabled, active = parse_dispatcher_list(REAL_RESULT)
    assert disabled.disabled and not disabled.probing and not disabled.active
    assert active.active and active.probing and active.state == "A"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"NRSETS": 0}, []),
        ({"NRSETS": 0, "RECORDS": []}, []),
        # A single object instead of a list, attrs as a bare body string (older versions).
        (
            {
                "RECORDS": {
                    "SET": {
                        "ID": "2",
                        "TARGETS": {
                            "DEST": {
                                "URI": "sip:b",
                                "FLAGS": "IP",
                                "PRIORITY": 1,
                                "ATTRS": "weight=5",
                            }
                        },
                    }
                }
            },
            [DispatcherDestination(2, "sip:b", "IP", 1, {"weight": "5"})],
        ),
        (
            {
                "RECORDS": [
                    {
                        "SET": {
                            "ID": 1,
                            "TARGETS": [
                                {
                                    "DEST": {
                                        "URI": "sip:c",
                                        "FLAGS": "AX",
                                        "PRIORITY": 0,
                                        "ATTRS": {"BODY": None},
                                    }
                                }
                            ],
                        }
                    }
                ]
            },
            [DispatcherDestination(1, "sip:c", "AX", 0, {})],
        ),
    ],
)
def test_parse_shapes(result: Any, expected: list[DispatcherDestination]) -> None:
    assert parse_dispatcher_list(result) == expected


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "x",
        {"RECORDS": [{"NOSET": 1}]},
        {"RECORDS": [{"SET": {"ID": 1, "TARGETS": [{"X": 1}]}}]},
    ],
)
def test_parse_rejects_garbage(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_dispatcher_list(bad)


def test_parse_attrs_body() -> None:
    assert parse_attrs_body("duid=n1;weight=33;maxload=40;;flag") == {
        "duid": "n1",
        "weight": "33",
        "maxload": "40",
        "flag": "",
    }
    assert parse_attrs_body("") == {}


def test_result_errors_name_method_and_target() -> None:
    raw = b'{"jsonrpc":"2.0","error":{"code":500,"message":"No Destination Sets"},"id":3}'
    with pytest.raises(RpcCallError) as info:
        _result("dispatcher.list", "/run/rpc.sock", raw, 3)
    err = info.value
    assert isinstance(err, RpcError)
    assert (err.method, err.target, err.code, err.message) == (
        "dispatcher.list",
        "/run/rpc.sock",
        500,
        "No Destination Sets",
    )
    assert "dispatcher.list" in str(err) and "/run/rpc.sock" in str(err)
    with pytest.raises(RpcCallError, match="not JSON"):
        _result("core.uptime", "t", b"<html>", 1)
    with pytest.raises(RpcCallError, match="reply id"):
        _result("core.uptime", "t", b'{"jsonrpc":"2.0","result":1,"id":9}', 1)
    assert _result("core.uptime", "t", b'{"jsonrpc":"2.0","result":{"uptime":4},"id":1}', 1) == {
        "uptime": 4
    }


def test_bad_target_is_refused() -> None:
    with pytest.raises(RpcError, match="bad Kamailio RPC target"):
        KamailioRpc("localhost:8080")


async def _call_missing(target: str) -> None:
    async with KamailioRpc(target, timeout=1.0) as rpc:
        await rpc.uptime()


def test_missing_socket_is_an_rpc_error(tmp_path: Any) -> None:
    import asyncio

    with pytest.raises(RpcCallError, match="is Kamailio running"):
        asyncio.run(_call_missing(f"unix:{tmp_path}/nothing.sock"))
