"""Operators' rollout actions, and how a box is replaced, as pure functions."""

from __future__ import annotations

import json

import pytest

from asterfleet.errors import UsageError
from asterfleet.rollout.gate import GATE_HEADER, gate_scenario
from asterfleet.rollout.model import NodeProgress, Phase, Rollout, RolloutState, Target
from asterfleet.rollout.operations import plan_rollout, plan_undo, transition
from asterfleet.rollout.replace import (
    command_argv,
    kubernetes_requests,
    parse_replace,
    systemd_argvs,
)
from asterfleet.sipp.runner import UAC_BYE_ANSWER, UAC_INVITE_ANSWER

V1, V2 = Target(version="1"), Target(version="2", image="reg/ast:2")


def rollout(state: RolloutState) -> Rollout:
    return Rollout(id="r1", cluster="c", target=V2, state=state)


@pytest.mark.parametrize(
    ("state", "verb", "result"),
    [
        (RolloutState.RUNNING, "pause", RolloutState.PAUSED),
        (RolloutState.PAUSED, "resume", RolloutState.RUNNING),
        (RolloutState.RUNNING, "abort", RolloutState.ABORTED),
        (RolloutState.PAUSED, "abort", RolloutState.ABORTED),
        (RolloutState.PAUSED, "pause", None),  # already paused
        (RolloutState.RUNNING, "resume", None),
        (RolloutState.SUCCEEDED, "abort", None),  # finished: nothing to stop
        (RolloutState.FAILED, "resume", None),
        (RolloutState.RUNNING, "explode", None),
    ],
)
def test_transition(state: RolloutState, verb: str, result: RolloutState | None) -> None:
    if result is None:
        with pytest.raises(UsageError):
            transition(rollout(state), verb, "alice", 5.0)
        return
    new = transition(rollout(state), verb, "alice", 5.0)
    assert new.state is result
    assert ("alice" in new.reason) == (verb != "resume")


def test_plan_rollout_orders_nodes_and_refuses_bad_input() -> None:
    r = plan_rollout("r1", "c", V2, ["b", "a"], "alice", 1.0, gate_calls=3)
    assert [n.id for n in r.nodes] == ["a", "b"]
    assert all(n.target == V2 for n in r.nodes)
    with pytest.raises(UsageError, match="--image REF or --version V"):
        plan_rollout("r1", "c", Target(), ["a"], "alice", 1.0)
    with pytest.raises(UsageError, match="no registered node"):
        plan_rollout("r1", "c", V2, [], "alice", 1.0)


def test_undo_puts_back_what_each_done_node_ran_in_reverse_order() -> None:
    done = Rollout(
        id="r1",
        cluster="c",
        target=V2,
        state=RolloutState.SUCCEEDED,
        nodes=[
            NodeProgress(id="a", phase=Phase.DONE, target=V2, previous=V1),
            NodeProgress(id="b", phase=Phase.SKIPPED, target=V2),
            NodeProgress(id="c", phase=Phase.DONE, target=V2, previous=V1),
        ],
    )
    undo = plan_undo(done, "r2", "bob", 2.0)
    assert [(n.id, n.target) for n in undo.nodes] == [("c", V1), ("a", V1)]
    assert undo.target == V1 and undo.undo_of == "r1"
    with pytest.raises(UsageError, match="abort it first"):
        plan_undo(rollout(RolloutState.RUNNING), "r3", "bob", 2.0)


@pytest.mark.parametrize(
    "text",
    ["", "podman", "ssh:host", "command:", "kubernetes:ns/sts", "command:'unclosed"],
)
def test_parse_replace_refuses_what_it_cannot_run(text: str) -> None:
    with pytest.raises(UsageError):
        parse_replace(text)


def test_a_command_gets_its_words_filled_in_never_a_shell() -> None:
    action = parse_replace("command:replace-box {node} '{image} x' --version={version}")
    assert command_argv(action, "ast1", V2) == [
        "replace-box", "ast1", "reg/ast:2 x", "--version=2",
    ]  # fmt: skip


def test_systemd_sets_the_target_then_restarts_the_unit() -> None:
    argvs = systemd_argvs(parse_replace("systemd:asterisk@{node}"), "ast1", V2)
    assert argvs[0][:2] == ["systemctl", "set-environment"]
    assert "ASTERFLEET_IMAGE=reg/ast:2" in argvs[0]
    assert argvs[1] == ["systemctl", "restart", "asterisk@ast1"]


def test_kubernetes_patches_the_statefulset_template_then_deletes_the_pod() -> None:
    patch, delete = kubernetes_requests(parse_replace("kubernetes:voice/ast/asterisk"), "ast-0", V2)
    assert (patch.method, patch.path) == (
        "PATCH",
        "/apis/apps/v1/namespaces/voice/statefulsets/ast",
    )
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert json.loads(patch.body or b"") == {
        "spec": {"template": {"spec": {"containers": [{"name": "asterisk", "image": "reg/ast:2"}]}}}
    }
    assert (delete.method, delete.path) == ("DELETE", "/api/v1/namespaces/voice/pods/ast-0")
    # a version-only target changes no template: the pod is only recreated
    (only,) = kubernetes_requests(parse_replace("kubernetes:voice/ast/asterisk"), "ast-0", V1)
    assert only.method == "DELETE"


def test_the_gate_call_names_the_box_for_the_balancer() -> None:
    text = gate_scenario("sip:127.0.0.1:5071;transport=udp")
    assert f"{GATE_HEADER}: sip:127.0.0.1:5071;transport=udp\n" in text
    assert text.count("INVITE sip:") == 1
    with pytest.raises(UsageError):
        gate_scenario("sip:a\r\nX: y")


@pytest.mark.parametrize(
    ("counter", "answers"), [(UAC_INVITE_ANSWER, "INVITE"), (UAC_BYE_ANSWER, "BYE")]
)
def test_the_outcome_counters_are_the_200s_of_invite_and_bye(counter: str, answers: str) -> None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(gate_scenario("sip:127.0.0.1:5071").encode("iso-8859-1"))
    # SIPp numbers messages, pauses and the like; labels take no number.
    steps = [e for e in root if e.tag != "label"]
    index, status = counter.split("_")
    assert steps[int(index)].get("response") == status
    request = next(e for e in reversed(steps[: int(index)]) if e.tag == "send")
    assert (request.text or "").strip().startswith(answers + " ")
