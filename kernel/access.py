"""The access manager: Casbin decides every syscall before it touches a resource."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import casbin

from kernos.kernel.errors import PolicyError

_FIELDS = {"p": 6, "g": 3, "a": 5}
_EFFECTS = {"allow", "deny"}
#: Rules that mark what needs a human's approval: `a, user|role, agent, tenant, resource,
#: syscall`, matched like `p` rules (roles included), decided by this model.
_APPROVAL_MODEL = """
[request_definition]
r = sub, agent, dom, obj, act
[policy_definition]
p = sub, agent, dom, obj, act
[role_definition]
g = _, _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = (g(r.sub, p.sub, r.dom) || keyMatch(r.sub, p.sub)) && keyMatch(r.agent, p.agent) \
    && keyMatch(r.dom, p.dom) && keyMatch(r.obj, p.obj) && keyMatch(r.act, p.act)
"""


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
    basis: Literal["policy", "identity", "finished", "budget", "approval"] = "policy"
    """What the decision rested on: the policy, the kernel's own checks, or a human."""
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
        where = f"{path}:{number}"
        kind = fields[0]
        if kind not in _FIELDS:
            raise PolicyError(f"{where}: unknown rule type {kind!r}; expected 'p', 'g' or 'a'")
        expected = _FIELDS[kind]
        if len(fields) - 1 != expected:
            raise PolicyError(
                f"{where}: a {kind!r} rule has {expected} fields after the type, "
                f"this line has {len(fields) - 1}: {stripped!r}"
            )
        if any(not field for field in fields):
            raise PolicyError(f"{where}: empty field in {stripped!r}")
        if kind == "p" and fields[-1] not in _EFFECTS:
            raise PolicyError(f"{where}: effect {fields[-1]!r} is neither 'allow' nor 'deny'")
        rules.append(fields)
    return rules


class AccessManager:
    """Decides syscalls with a Casbin enforcer; deny by default, deny overrides allow."""

    def __init__(self, model_path: Path, policy_path: Path) -> None:
        if not model_path.is_file():
            raise PolicyError(f"Casbin model file {str(model_path)!r} does not exist")
        rules = read_policy_file(policy_path)
        try:
            self._enforcer = casbin.Enforcer(str(model_path))
        except Exception as exc:  # casbin raises bare exceptions for malformed models
            raise PolicyError(f"cannot load Casbin model {str(model_path)!r}: {exc}") from exc
        approvals_model = casbin.model.Model()
        approvals_model.load_model_from_text(_APPROVAL_MODEL)
        self._approvals = casbin.Enforcer(approvals_model)
        for kind in ("p", "g", "a"):
            # Deduplicated: Casbin adds none of a batch that repeats a rule.
            chosen = [list(r) for r in dict.fromkeys(tuple(r[1:]) for r in rules if r[0] == kind)]
            if kind == "p" and chosen:
                self._enforcer.add_policies(chosen)
            elif kind == "g" and chosen:
                self._enforcer.add_grouping_policies(chosen)
                self._approvals.add_grouping_policies(chosen)
            elif kind == "a" and chosen:
                self._approvals.add_policies(chosen)
        self.model_path = model_path
        self.policy_path = policy_path

    def decide(self, subject: Subject, syscall: str, resource: str) -> Decision:
        """Allow or deny `syscall` on `resource` for `subject`."""
        allowed, explain = self._enforcer.enforce_ex(
            subject.user, subject.agent, subject.tenant, resource, syscall
        )
        rule = ", ".join(explain) if explain else None
        if allowed:
            needs, marked = self._approvals.enforce_ex(
                subject.user, subject.agent, subject.tenant, resource, syscall
            )
            approval = "a, " + ", ".join(marked) if needs else None
            return Decision(allowed=True, rule=rule, approval_rule=approval)
        reason = (
            f"{syscall} on {resource} denied for user {subject.user!r} running agent "
            f"{subject.agent!r} in tenant {subject.tenant!r} "
            + (f"(rule: {rule})" if rule else "(no rule allows it)")
        )
        return Decision(allowed=False, rule=rule, reason=reason)
