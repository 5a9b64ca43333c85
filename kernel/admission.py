"""Admission: on whose behalf, in which tenant and at what priority a run is admitted.

A client with an API key acts as the key's user, qualified by the key's home tenant wherever it
acts outside it (`home/user`: a rule for tenant acme's `carol` is not one for tenant evil's
`carol`). Submitting into another tenant needs a rule allowing `run.submit` on
`tenant:<other>`, and asking for a priority above the tenant's default (a lower number) a rule
allowing `run.submit` on `priority:<n>`; asking for a scheduling policy other than the
kernel's default, a rule allowing `run.submit` on `policy:<policy>` (a `fifo` or `rr` run
carries no priority key, and a `priority` run no fairness key: either would escape the tenant's
priority and weight). Each key holder's submission is audited, naming the key: an admitted one
in the run's tenant's chain, a refused one in the key's home tenant's (a refusal admits nothing
into the other tenant, and its chain is not another tenant's to grow).

The operator on the kernel's host (no key, holding the kernel's database credentials) submits
for any tenant and user at any priority, unless the kernel requires a key.
"""

from __future__ import annotations

from kernos.kernel.access import Decision, Subject
from kernos.kernel.api_keys import AuthenticationFailed, Principal
from kernos.kernel.audit import AuditLog
from kernos.kernel.config import Settings
from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import AccessDenied
from kernos.kernel.syscall_table import RUN_SUBMIT
from kernos.kernel.syscalls import RunSpec


async def admitted_spec(
    settings: Settings, pool: Pool, principal: Principal | None, spec: RunSpec, run_id: str
) -> RunSpec:
    """`spec` as the kernel admits it (tenant, user, priority decided), or AccessDenied."""
    if principal is None and settings.require_api_key:
        raise AuthenticationFailed(
            "this kernel requires an API key to submit runs (require_api_key): pass "
            "api_key, `--api-key` or $KERNOS_API_KEY"
        )
    if principal is None:
        return _at_priority(settings, spec)
    asked = spec.model_fields_set
    if "user" in asked and spec.user not in (principal.user, principal.qualified):
        raise AccessDenied(
            f"API key {principal.key_id} is {principal.qualified!r}'s: it cannot submit as "
            f"{spec.user!r}"
        )
    tenant = spec.tenant if "tenant" in asked else principal.tenant
    spec = _at_priority(
        settings, spec.model_copy(update={"tenant": tenant, "user": principal.user_in(tenant)})
    )
    default = settings.scheduler.priority_for(tenant)
    checks = []
    if tenant != principal.tenant:
        checks.append((f"tenant:{tenant}", f"submit runs in tenant {tenant!r}"))
    if spec.priority < default:
        what = f"submit at priority {spec.priority} (the default in tenant {tenant!r} is {default})"
        checks.append((f"priority:{spec.priority}", what))
    policy = settings.scheduler.policy
    if spec.policy is not None and spec.policy != policy:
        what = f"choose scheduling policy {spec.policy!r} (the kernel's is {policy!r})"
        checks.append((f"policy:{spec.policy}", what))
    subject = Subject(run_id, tenant, spec.user, spec.agent)
    # The rules are read only when one is needed.
    rules, refusal = await _ruled(settings, subject, principal, checks) if checks else ([], None)
    recorded = Decision(
        refusal is None,
        "; ".join(rules) or None,
        refusal or f"{spec.agent} at priority {spec.priority}",
    )
    # A refused submission names no run (none was admitted) and stays in the home chain.
    who = subject if refusal is None else Subject("", principal.tenant, principal.user, spec.agent)
    await AuditLog(pool).record_operator(
        who, RUN_SUBMIT.name, f"tenant:{tenant}", recorded, key_id=principal.key_id
    )
    if refusal is not None:
        raise AccessDenied(refusal)
    return spec


async def _ruled(
    settings: Settings, subject: Subject, principal: Principal, checks: list[tuple[str, str]]
) -> tuple[list[str], str | None]:
    """The rules that allow each (resource, what) check, or why the first is refused."""
    # Here: the policy store (Casbin's adapter, SQLAlchemy) is loaded by the commands that
    # admit, not by every command that imports the client.
    from kernos.kernel.policy_store import load_access

    access = await load_access(settings)
    rules: list[str] = []
    for resource, what in checks:
        decision = access.decide(subject, RUN_SUBMIT.name, resource)
        if not decision.allowed:
            return rules, (
                f"{subject.user!r} (API key {principal.key_id}) may not {what}: no rule allows "
                f"{RUN_SUBMIT.name} on {resource}"
            )
        rules.append(decision.rule or "")
    return rules, None


def _at_priority(settings: Settings, spec: RunSpec) -> RunSpec:
    """The spec at the priority it asked for, else at its tenant's default."""
    if "priority" in spec.model_fields_set:
        return spec
    priority = settings.scheduler.priority_for(spec.tenant)
    return spec.model_copy(update={"priority": priority})
