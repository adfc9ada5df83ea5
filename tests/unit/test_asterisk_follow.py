"""What a running box does when the fleet's balancers change (asterisk config --follow)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asterfleet.asterisk.boxconf import BoxConfig, render_box_config
from asterfleet.asterisk.follow import Follower, follow_addresses, plan, reload_argv, write_files
from asterfleet.etcd_client import Snapshot, WatchEvent, WatchLost
from asterfleet.fleet.keys import Keyspace


@pytest.mark.parametrize(
    ("current", "published", "expected"),
    [
        (("10.0.0.2",), ("10.0.0.2",), None),  # unchanged
        (("10.0.0.2",), ("10.0.0.2", "10.0.0.3"), ("10.0.0.2", "10.0.0.3")),  # one added
        (("10.0.0.2", "10.0.0.3"), ("10.0.0.3",), ("10.0.0.3",)),  # one gone
        (("10.0.0.2",), ("10.0.0.9",), ("10.0.0.9",)),  # moved
        (("10.0.0.2",), (), None),  # none published: keep the last ones
    ],
)
def test_follow_addresses(
    current: tuple[str, ...], published: tuple[str, ...], expected: tuple[str, ...] | None
) -> None:
    assert follow_addresses(current, published) == expected


def _files(balancers: tuple[str, ...], **kw: object) -> dict[str, str]:
    return render_box_config(BoxConfig(balancers=balancers, ami_secret="s", **kw))  # type: ignore[arg-type]


def test_a_new_balancer_rewrites_and_reloads_pjsip_only() -> None:
    step = plan(_files(("10.0.0.2",)), _files(("10.0.0.2", "10.0.0.3")))
    assert (step.write, step.reload, step.restart) == (("pjsip.conf",), ("res_pjsip.so",), ())


@pytest.mark.parametrize(
    ("change", "write", "reload", "restart"),
    [
        ({}, (), (), ()),
        ({"ami_secret": "t"}, ("manager.conf",), ("manager",), ()),
        ({"rtp_start": 12000}, ("rtp.conf",), ("res_rtp_asterisk.so",), ()),
        ({"dialplan_context": "x"}, ("extensions.conf",), ("pbx_config.so",), ()),
        ({"prefix": "/opt/ast"}, ("asterisk.conf",), (), ("asterisk.conf",)),
    ],
)
def test_plan_per_file(
    change: dict[str, object],
    write: tuple[str, ...],
    reload: tuple[str, ...],
    restart: tuple[str, ...],
) -> None:
    base = {"balancers": ("10.0.0.2",), "ami_secret": "s"}
    old = render_box_config(BoxConfig(**base))  # type: ignore[arg-type]
    new = render_box_config(BoxConfig(**{**base, **change}))  # type: ignore[arg-type]
    step = plan(old, new)
    assert (step.write, step.reload, step.restart) == (write, reload, restart)


def test_missing_files_are_written() -> None:
    files = _files(("10.0.0.2",))
    step = plan({"pjsip.conf": None}, files)
    assert set(step.write) == set(files)
    assert "res_pjsip.so" in step.reload and "asterisk.conf" in step.restart


def test_reload_goes_through_the_control_socket() -> None:
    assert reload_argv("/usr/sbin/asterisk", "/etc/asterisk", "res_pjsip.so") == [
        "/usr/sbin/asterisk", "-C", "/etc/asterisk/asterisk.conf", "-rx",
        "module reload res_pjsip.so",
    ]  # fmt: skip


def test_follower_writes_reloads_and_retries(tmp_path: Path) -> None:
    cfg = BoxConfig(balancers=("10.0.0.2",), ami_secret="s", config_dir=str(tmp_path))
    for name, text in render_box_config(cfg).items():
        (tmp_path / name).write_text(text)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    answers: list[str | None] = ["Unable to connect to remote asterisk", None]
    calls: list[str] = []

    def reloader(module: str) -> str | None:
        calls.append(module)
        return answers.pop(0)

    follower = Follower(cfg, tmp_path, reloader)
    follower.apply(("10.0.0.2",))  # nothing changed: nothing done
    assert calls == [] and {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    follower.apply(("10.0.0.2", "10.0.0.7"))
    pjsip = (tmp_path / "pjsip.conf").read_text()
    assert "match = 10.0.0.7" in pjsip
    assert calls == ["res_pjsip.so"] and follower.pending == ["res_pjsip.so"]  # failed: kept
    assert (tmp_path / "manager.conf").read_text() == before["manager.conf"]
    follower.reload_pending()
    assert calls == ["res_pjsip.so", "res_pjsip.so"] and follower.pending == []
    m = follower.metrics.registry
    assert m.get_sample_value("asterfleet_box_config_changes_total", {"what": "balancers"}) == 1
    assert m.get_sample_value("asterfleet_box_config_balancers") == 2
    reloads = {"module": "res_pjsip.so"}
    assert m.get_sample_value("asterfleet_box_config_reloads_total", {**reloads, "result": "ok"})
    assert (
        m.get_sample_value("asterfleet_box_config_reloads_total", {**reloads, "result": "failed"})
        == 1
    )
    assert m.get_sample_value("asterfleet_box_config_reloads_pending") == 0
    follower.apply(())  # every balancer record gone: keep the last addresses
    assert "match = 10.0.0.7" in (tmp_path / "pjsip.conf").read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_written_files_keep_the_secret_private(tmp_path: Path) -> None:
    write_files(tmp_path, {"manager.conf": "secret = s\n", "pjsip.conf": "x\n"})
    assert (tmp_path / "manager.conf").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "pjsip.conf").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manager.conf", "pjsip.conf"]


def test_a_changed_dialplan_is_copied_in_and_reloaded(tmp_path: Path) -> None:
    source = tmp_path / "mounted" / "dialplan.conf"
    source.parent.mkdir()
    source.write_text("[fleet-dialplan]\nexten => 100,1,Answer()\n")
    target = tmp_path / "etc"
    calls: list[str] = []
    cfg = BoxConfig(balancers=("10.0.0.2",), ami_secret="s", config_dir=str(target))
    follower = Follower(cfg, target, lambda m: calls.append(m) or None, dialplan_source=source)  # type: ignore[func-returns-value]
    follower.check_dialplan()  # first copy
    follower.reload_pending()
    assert (target / "dialplan.conf").read_text() == source.read_text()
    follower.check_dialplan()  # unchanged: nothing
    follower.reload_pending()
    source.write_text("[fleet-dialplan]\nexten => 200,1,Answer()\n")
    follower.check_dialplan()
    follower.reload_pending()
    assert "200" in (target / "dialplan.conf").read_text()
    assert calls == ["pbx_config.so", "pbx_config.so"]
    source.unlink()  # a ConfigMap being swapped: keep the last copy
    follower.check_dialplan()
    follower.check_dialplan()
    assert "200" in (target / "dialplan.conf").read_text() and follower.pending == []


def test_the_dialplan_is_checked_while_balancer_records_churn(tmp_path: Path) -> None:
    """Balancers rewrite their records about every second: the dialplan check
    runs on a clock, not only when the watch is quiet."""
    source = tmp_path / "dialplan.conf"
    source.write_text("[fleet-dialplan]\n")
    target = tmp_path / "etc"
    target.mkdir()
    (target / "dialplan.conf").write_text("[fleet-dialplan]\n")
    calls: list[str] = []

    def reloader(module: str) -> None:
        calls.append(module)

    cfg = BoxConfig(balancers=("10.0.0.2",), ami_secret="s", config_dir=str(target))
    follower = Follower(cfg, target, reloader, debounce=0.0, dialplan_source=source, tick=0.2)

    class Records:  # what Etcd.get_prefix answers: no balancer record
        async def get_prefix(self, prefix: str) -> Snapshot:
            return Snapshot(1, [])

    async def go() -> None:
        queue: asyncio.Queue[WatchEvent | WatchLost] = asyncio.Queue()
        stopping = asyncio.Event()
        task = asyncio.create_task(
            follower._follow_watch(Records(), Keyspace("c1"), queue, stopping)  # type: ignore[arg-type]
        )
        source.write_text("[fleet-dialplan]\nexten => 1,1,Answer()\n")
        for _ in range(30):  # an event every 50 ms: the watch is never quiet for a tick
            await queue.put(WatchEvent("put", "/x", b"", 1))
            await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert "exten => 1" in (target / "dialplan.conf").read_text()
    assert calls == ["pbx_config.so"]
