"""The access manager: deny by default, deny overrides allow, malformed policies named."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernos import PolicyError, Settings
from kernos.kernel.access import AccessManager, Subject

ALICE = Subject(run_id="r1", tenant="acme", user="alice", agent="planner")


def manager(tmp_path: Path, policy: str) -> AccessManager:
    path = tmp_path / "policy.csv"
    path.write_text(policy)
    return AccessManager(Settings().policy.resolved_model_path(), path)


def test_default_policy_allows_llm_chat() -> None:
    policy = Settings().policy
    access = AccessManager(policy.resolved_model_path(), policy.resolved_policy_path())
    decision = access.decide(ALICE, "llm.chat", "llm:gemma")
    assert decision.allowed
    assert decision.rule == "*, *, *, llm:*, llm.*, allow"


def test_deny_by_default(tmp_path: Path) -> None:
    access = manager(tmp_path, "p, *, *, *, llm:*, llm.chat, allow\n")
    decision = access.decide(ALICE, "memory.search", "memory:notes")
    assert not decision.allowed
    assert decision.rule is None


def test_deny_overrides_allow(tmp_path: Path) -> None:
    access = manager(
        tmp_path,
        "p, *, *, *, llm:*, llm.chat, allow\np, *, *, acme, llm:secret, llm.chat, deny\n",
    )
    assert not access.decide(ALICE, "llm.chat", "llm:secret").allowed
    assert access.decide(ALICE, "llm.chat", "llm:gemma").allowed
    other = Subject(run_id="r2", tenant="globex", user="alice", agent="planner")
    assert access.decide(other, "llm.chat", "llm:secret").allowed


def test_roles_in_a_tenant(tmp_path: Path) -> None:
    access = manager(
        tmp_path,
        "p, role:analyst, *, acme, llm:big, llm.chat, allow\ng, alice, role:analyst, acme\n",
    )
    assert access.decide(ALICE, "llm.chat", "llm:big").allowed
    bob = Subject(run_id="r3", tenant="acme", user="bob", agent="planner")
    assert not access.decide(bob, "llm.chat", "llm:big").allowed


def test_agent_specific_rule(tmp_path: Path) -> None:
    access = manager(tmp_path, "p, *, planner, *, llm:*, llm.chat, allow\n")
    assert access.decide(ALICE, "llm.chat", "llm:x").allowed
    other = Subject(run_id="r4", tenant="acme", user="alice", agent="coder")
    assert not access.decide(other, "llm.chat", "llm:x").allowed


@pytest.mark.parametrize(
    ("policy", "line", "problem"),
    [
        ("# ok\np, *, *, *, llm:*, llm.chat, allow\nq, x\n", 3, "unknown rule type 'q'"),
        ("p, *, *, llm:*, llm.chat, allow\n", 1, "6 fields after the type, this line has 5"),
        ("\n\np, *, *, *, llm:*, llm.chat, maybe\n", 3, "neither 'allow' nor 'deny'"),
        ("g, alice, role:x\n", 1, "3 fields after the type, this line has 2"),
        ("p, *, , *, llm:*, llm.chat, allow\n", 1, "empty field"),
    ],
)
def test_malformed_policy_names_the_line(
    tmp_path: Path, policy: str, line: int, problem: str
) -> None:
    with pytest.raises(PolicyError, match=rf"policy.csv:{line}: .*{problem}"):
        manager(tmp_path, policy)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nothing\.csv"):
        AccessManager(Settings().policy.resolved_model_path(), tmp_path / "nothing.csv")
    with pytest.raises(PolicyError, match=r"model\.conf' does not exist"):
        AccessManager(tmp_path / "model.conf", tmp_path / "nothing.csv")
