"""The access manager: Casbin decides every syscall before it touches a resource."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import casbin

from kernos.kernel.errors import PolicyError

_FIELDS = {"p": 6, "g": 3}
_EFFECTS = {"allow", "deny"}


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
    basis: Literal["policy", "identity", "finished", "budget"] = "policy"
    """What the decision rested on: the policy, or the kernel's own checks."""

    @property
    def word(self) -> str:
        """`allow` or `deny`, as the audit log spells it."""
        return "allow" if self.allowed else "deny"


def validate_policy_file(path: Path) -> None:
    """Raise PolicyError naming the first malformed line of a Casbin CSV policy."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {str(path)!r}: {exc.strerror}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [field.strip() for field in next(csv.reader([stripped], skipinitialspace=True))]
        where = f"{path}:{number}"
        kind = fields[0]
        if kind not in _FIELDS:
            raise PolicyError(f"{where}: unknown rule type {kind!r}; expected 'p' or 'g'")
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


class AccessManager:
    """Decides syscalls with a Casbin enforcer; deny by default, deny overrides allow."""

    def __init__(self, model_path: Path, policy_path: Path) -> None:
        if not model_path.is_file():
            raise PolicyError(f"Casbin model file {str(model_path)!r} does not exist")
        validate_policy_file(policy_path)
        try:
            self._enforcer = casbin.Enforcer(str(model_path), str(policy_path))
        except Exception as exc:  # casbin raises bare exceptions for malformed models
            raise PolicyError(f"cannot load Casbin model {str(model_path)!r}: {exc}") from exc
        self.model_path = model_path
        self.policy_path = policy_path

    def decide(self, subject: Subject, syscall: str, resource: str) -> Decision:
        """Allow or deny `syscall` on `resource` for `subject`."""
        allowed, explain = self._enforcer.enforce_ex(
            subject.user, subject.agent, subject.tenant, resource, syscall
        )
        rule = ", ".join(explain) if explain else None
        if allowed:
            return Decision(allowed=True, rule=rule)
        reason = (
            f"{syscall} on {resource} denied for user {subject.user!r} running agent "
            f"{subject.agent!r} in tenant {subject.tenant!r} "
            + (f"(rule: {rule})" if rule else "(no rule allows it)")
        )
        return Decision(allowed=False, rule=rule, reason=reason)
