"""The access manager: Casbin decides every syscall before it touches a resource."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import casbin

from kernos.kernel.errors import PolicyError

_FIELDS = {"p": 6, "g": 3, "a": 5}
_EFFECTS = {"allow", "deny"}
#: Decisions remembered before the memory is cleared (a bound, not an eviction policy).
_REMEMBERED = 100_000
#: Tenants whose enforcers are kept before they are all dropped (a bound, not an eviction policy).
_TENANTS_KEPT = 1_000
#: Casbin's policy type for each kind of rule: `a` (needs a human's approval) is the model's p2.
PTYPES = {"p": "p", "g": "g", "a": "p2"}


@dataclass(frozen=True)
class Subject:
    """Who is asking: the identity the kernel recorded for the run, never the agent's claim."""

    run_id: str
    tenant: str
    user: str
    agent: str


@dataclass(frozen=True)
class Decision:
    """The access manager's answer, with the policy line that decided it."""

    allowed: bool
    rule: str | None
    reason: str | None = None
    basis: Literal["policy", "identity", "finished", "budget", "approval", "claim"] = "policy"
    """What the decision rested on: the policy, the kernel's own checks (of the caller, of
    what its workflow claimed), or a human."""
    approval_rule: str | None = None
    """Allowed only with a human's approval: the `a` rule that says so."""

    @property
    def word(self) -> str:
        """`allow` or `deny`, as the audit log spells it."""
        return "allow" if self.allowed else "deny"


def read_policy_file(path: Path) -> list[list[str]]:
    """The rules of a Casbin CSV policy (`p`, `g` and kernos's `a`), each as its fields.

    Raises PolicyError naming the first malformed line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {str(path)!r}: {exc.strerror}") from exc
    rules: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [field.strip() for field in next(csv.reader([stripped], skipinitialspace=True))]
        rules.append(check_rule(fields, f"{path}:{number}"))
    return rules


class AccessManager:
    """Decides syscalls with a Casbin enforcer; deny by default, deny overrides allow."""

    def __init__(self, model_path: Path, policy_path: Path) -> None:
        """Rules from a CSV policy file, fixed for the life of the process."""
        self._enforcer: casbin.CoreEnforcer = _enforcer(model_path, None)
        rules = read_policy_file(policy_path)
        _check_approvals(self._enforcer, model_path, rules)
        for kind, ptype in PTYPES.items():
            chosen = [rule[1:] for rule in rules if rule[0] == kind]
            # Deduplicated: Casbin adds none of a batch that repeats a rule.
            chosen = [list(r) for r in dict.fromkeys(tuple(r) for r in chosen)]
            if not chosen:
                continue
            if kind == "g":
                self._enforcer.add_named_grouping_policies(ptype, chosen)
            else:
                self._enforcer.add_named_policies(ptype, chosen)
        self.model_path = model_path
        self.source = str(policy_path)
        self._partition()

    @classmethod
    async def from_database(cls, model_path: Path, adapter: Any) -> AccessManager:
        """Rules from PostgreSQL through Casbin's async SQLAlchemy adapter; `reload` re-reads."""
        manager = cls.__new__(cls)
        manager._enforcer = _enforcer(model_path, adapter)
        manager.model_path = model_path
        manager.source = "database"
        await manager.reload()
        return manager

    async def reload(self) -> None:
        """Re-read the rules from the database (the swap is atomic for `decide`)."""
        enforcer = self._enforcer
        if not isinstance(enforcer, casbin.AsyncEnforcer):
            raise PolicyError("a policy read from a file is not reloaded; restart the worker")
        await enforcer.load_policy()
        self._partition()

    def _partition(self) -> None:
        """Forget what was decided, and split the rules by tenant where the model allows.

        Casbin matches every rule in turn; a request in tenant T can only match rules whose
        tenant field matches T (the packaged model's `keyMatch(r.dom, p.dom)`, and roles of T),
        so each tenant gets an enforcer of those rules alone, built when first needed. A model
        with other matchers keeps one enforcer for all.
        """
        self._decided: dict[tuple[str, ...], Decision] = {}
        self._approval_rules: dict[tuple[str, ...], str | None] = {}
        self._tenants: dict[str, casbin.CoreEnforcer] = {}
        self._rules = self.rules()
        self._partitioned = _matchers(self._enforcer) == _matchers(_packaged_enforcer())

    def _for(self, tenant: str) -> casbin.CoreEnforcer:
        """The enforcer for requests in `tenant`."""
        if not self._partitioned:
            return self._enforcer
        found = self._tenants.get(tenant)
        if found is None:
            if len(self._tenants) >= _TENANTS_KEPT:
                self._tenants.clear()
            found = _enforcer(self.model_path, None)
            for kind, ptype in PTYPES.items():
                # The tenant is the third field of every kind of rule.
                chosen = [r[1:] for r in self._rules if r[0] == kind and _in(tenant, kind, r[3])]
                if chosen and kind == "g":
                    found.add_named_grouping_policies(ptype, chosen)
                elif chosen:
                    found.add_named_policies(ptype, chosen)
            self._tenants[tenant] = found
        return found

    def rules(self) -> list[list[str]]:
        """Every rule, as in a CSV policy (`a` for approval rules)."""
        model = self._enforcer.get_model()
        found = []
        for kind, ptype in PTYPES.items():
            section = "g" if kind == "g" else "p"
            if ptype in model.model.get(section, {}):
                found += [[kind, *rule] for rule in model.model[section][ptype].policy]
        return found

    def decide(self, subject: Subject, syscall: str, resource: str) -> Decision:
        """Allow or deny `syscall` on `resource` for `subject`.

        Decisions are remembered until the rules change: the same requests come again and
        again, and even split by tenant a decision costs a Casbin match (0.2 ms at 1,000
        rules here against 5 ms unsplit, bench/access.py).
        """
        key = (subject.user, subject.agent, subject.tenant, resource, syscall)
        known = self._decided.get(key)
        if known is None:
            if len(self._decided) >= _REMEMBERED:
                self._decided.clear()
            known = self._decided[key] = self._decide(subject, syscall, resource)
        return known

    def approval_rule(self, subject: Subject, syscall: str, resource: str) -> str | None:
        """The `a` rule that makes `syscall` on `resource` wait for a human, if one does."""
        key = ("a", subject.user, subject.agent, subject.tenant, resource, syscall)
        if key not in self._approval_rules:
            if len(self._approval_rules) >= _REMEMBERED:
                self._approval_rules.clear()
            self._approval_rules[key] = self._approval_rule(subject, syscall, resource)
        return self._approval_rules[key]

    def _approval_rule(self, subject: Subject, syscall: str, resource: str) -> str | None:
        enforcer = self._for(subject.tenant)
        if "p2" not in enforcer.get_model().model["p"]:
            return None
        needs, marked = enforcer.enforce_ex(
            enforcer.new_enforce_context("2"),
            subject.user, subject.agent, subject.tenant, resource, syscall,
        )  # fmt: skip
        return "a, " + ", ".join(marked) if needs else None

    def _decide(self, subject: Subject, syscall: str, resource: str) -> Decision:
        allowed, explain = self._for(subject.tenant).enforce_ex(
            subject.user, subject.agent, subject.tenant, resource, syscall
        )
        rule = ", ".join(explain) if explain else None
        if allowed:
            approval = self.approval_rule(subject, syscall, resource)
            return Decision(allowed=True, rule=rule, approval_rule=approval)
        reason = (
            f"{syscall} on {resource} denied for user {subject.user!r} running agent "
            f"{subject.agent!r} in tenant {subject.tenant!r} "
            + (f"(rule: {rule})" if rule else "(no rule allows it)")
        )
        return Decision(allowed=False, rule=rule, reason=reason)


def check_rule(fields: list[str], where: str) -> list[str]:
    """`fields` (type first) if they make a valid rule, else PolicyError naming `where`."""
    kind = fields[0] if fields else ""
    shown = ", ".join(fields)
    if kind not in _FIELDS:
        raise PolicyError(f"{where}: unknown rule type {kind!r}; expected 'p', 'g' or 'a'")
    expected = _FIELDS[kind]
    if len(fields) - 1 != expected:
        raise PolicyError(
            f"{where}: a {kind!r} rule has {expected} fields after the type, "
            f"this line has {len(fields) - 1}: {shown!r}"
        )
    if any(not field for field in fields):
        raise PolicyError(f"{where}: empty field in {shown!r}")
    if kind == "p" and fields[-1] not in _EFFECTS:
        raise PolicyError(f"{where}: effect {fields[-1]!r} is neither 'allow' nor 'deny'")
    user, tenant = fields[1], fields[3]
    home, qualified, name = user.partition("/")
    if qualified and home == tenant:
        # In its own tenant a user is named plainly: this rule would never match anyone.
        raise PolicyError(
            f"{where}: {user!r} is a user of tenant {tenant!r} itself: name it {name!r} there "
            "(only a user of another tenant is named '<tenant>/<user>')"
        )
    return fields


def _in(tenant: str, kind: str, pattern: str) -> bool:
    """Whether a rule of `kind` with tenant field `pattern` can apply in `tenant`.

    Casbin's keyMatch for `p` and `a` rules (a `*` ends the compared prefix); roles (`g`) are
    per tenant, matched exactly.
    """
    if kind == "g":
        return pattern == tenant
    star = pattern.find("*")
    if star == -1:
        return tenant == pattern
    return tenant[:star] == pattern[:star] if len(tenant) > star else tenant == pattern[:star]


@functools.cache
def _packaged_enforcer() -> casbin.CoreEnforcer:
    return casbin.Enforcer(str(resources.files("kernos.policies") / "model.conf"))


def _matchers(enforcer: casbin.CoreEnforcer) -> tuple[str, ...]:
    section = enforcer.get_model().model.get("m", {})
    return tuple(sorted(f"{key}={assertion.value}" for key, assertion in section.items()))


def _enforcer(model_path: Path, adapter: Any) -> casbin.CoreEnforcer:
    if not model_path.is_file():
        raise PolicyError(f"Casbin model file {str(model_path)!r} does not exist")
    try:
        if adapter is None:
            return casbin.Enforcer(str(model_path))
        return casbin.AsyncEnforcer(str(model_path), adapter)
    except Exception as exc:  # casbin raises bare exceptions for malformed models
        raise PolicyError(f"cannot load Casbin model {str(model_path)!r}: {exc}") from exc


def _check_approvals(
    enforcer: casbin.CoreEnforcer, model_path: Path, rules: list[list[str]]
) -> None:
    if any(rule[0] == "a" for rule in rules) and "p2" not in enforcer.get_model().model["p"]:
        raise PolicyError(
            f"the policy has 'a' (approval) rules but the Casbin model {str(model_path)!r} "
            "defines no p2/r2/e2/m2 for them (see the packaged policies/model.conf)"
        )
