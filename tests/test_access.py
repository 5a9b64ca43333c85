"""The access manager: deny by default, deny overrides allow, malformed policies named."""

from __future__ import annotations

import random
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
        (
            "p, acme/carol, *, acme, llm:*, llm.chat, allow\n",
            1,
            "'acme/carol' is a user of tenant 'acme' itself: name it 'carol' there",
        ),
    ],
)
def test_malformed_policy_names_the_line(
    tmp_path: Path, policy: str, line: int, problem: str
) -> None:
    with pytest.raises(PolicyError, match=rf"policy.csv:{line}: .*{problem}"):
        manager(tmp_path, policy)


def test_a_user_of_another_tenant_is_named_by_it(tmp_path: Path) -> None:
    # Tenant acme opens a model to its partner's carol; evil's carol is someone else.
    access = manager(tmp_path, "p, partner/carol, *, acme, llm:big, llm.chat, allow\n")
    partners = Subject(run_id="r5", tenant="acme", user="partner/carol", agent="planner")
    evils = Subject(run_id="r6", tenant="acme", user="evil/carol", agent="planner")
    acmes = Subject(run_id="r7", tenant="acme", user="carol", agent="planner")
    assert access.decide(partners, "llm.chat", "llm:big").allowed
    assert not access.decide(evils, "llm.chat", "llm:big").allowed
    assert not access.decide(acmes, "llm.chat", "llm:big").allowed


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nothing\.csv"):
        AccessManager(Settings().policy.resolved_model_path(), tmp_path / "nothing.csv")
    with pytest.raises(PolicyError, match=r"model\.conf' does not exist"):
        AccessManager(tmp_path / "model.conf", tmp_path / "nothing.csv")


def test_rules_split_by_tenant_decide_exactly_as_all_rules_together(tmp_path: Path) -> None:
    # Random policies over tenants with wildcards and prefixes, roles per tenant, denies and
    # approval rules; every request decided both ways must agree, rule and approval included.
    rng = random.Random(3)
    tenants = ["acme", "acme-eu", "globex", "initech"]
    patterns = [*tenants, "*", "acme*", "glo*"]
    resources = ["llm:a", "llm:b", "tool:x", "tool:y", "memory:own"]
    lines = []
    for _ in range(300):
        kind = rng.random()
        if kind < 0.55:
            effect = "deny" if rng.random() < 0.15 else "allow"
            who = rng.choice(["*", "alice", "bob", "role:r1", "role:r2"])
            lines.append(
                f"p, {who}, {rng.choice(['*', 'coder', 'planner'])}, {rng.choice(patterns)}, "
                f"{rng.choice([*resources, 'tool:*', 'llm:*'])}, "
                f"{rng.choice(['llm.*', 'tool.call', '*'])}, {effect}"
            )
        elif kind < 0.85:
            user, role = rng.choice(["alice", "bob", "carol"]), rng.choice(["role:r1", "role:r2"])
            lines.append(f"g, {user}, {role}, {rng.choice([*tenants, '*'])}")
        else:
            lines.append(f"a, *, *, {rng.choice(patterns)}, {rng.choice(resources)}, tool.call")
    path = tmp_path / "policy.csv"
    path.write_text("\n".join(dict.fromkeys(lines)) + "\n")
    model = Settings().policy.resolved_model_path()
    split = AccessManager(model, path)
    together = AccessManager(model, path)
    together._partitioned = False  # the one enforcer of every rule, as Casbin alone decides
    assert split._partitioned
    seen = set()
    for _ in range(2000):
        subject = Subject("r", rng.choice([*tenants, "other"]), rng.choice(["alice", "bob",
                          "carol", "dave"]), rng.choice(["coder", "planner"]))  # fmt: skip
        resource = rng.choice(resources)
        syscall = "tool.call" if resource.startswith("tool") else "llm.chat"
        decision = split.decide(subject, syscall, resource)
        assert decision == together.decide(subject, syscall, resource), (subject, resource)
        seen.add((decision.allowed, decision.approval_rule is not None))
    assert seen == {(True, False), (True, True), (False, False)}  # every kind of answer
