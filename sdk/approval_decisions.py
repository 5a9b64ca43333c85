"""Deciding approvals: who may, recorded by the kernel, then the waiting run is woken."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowUpdateStage
from temporalio.service import RPCError

from kernos.kernel.access import Decision, Subject
from kernos.kernel.approvals import Approval, ApprovalStore
from kernos.kernel.audit import AuditLog
from kernos.kernel.errors import AccessDenied, InvalidRequest, NotFound
from kernos.kernel.syscall_table import APPROVAL_DECIDE
from kernos.kernel.syscalls import ApprovalNotice

if TYPE_CHECKING:
    from kernos.client import KernosClient

#: The syscall an approver's decision is checked and audited as: `p, alice, *, acme, tool:*,
#: approval.decide, allow` lets alice decide approvals of tools in tenant acme.
DECIDE = APPROVAL_DECIDE.name


class Decided(BaseModel):
    """A recorded decision, and whether the run took the wake-up at once."""

    approval: Approval
    woken: bool
    """False when the run was not listening (no agent worker, or it ended): it sees the
    decision when it next asks, at the latest when its wait times out."""


async def decide(
    client: KernosClient,
    run_id: str,
    *,
    approver: str,
    approve: bool,
    reason: str | None = None,
    approval_id: str | None = None,
    wake_timeout_s: float = 10.0,
) -> Decided:
    """Approve or deny a run's pending request (its only one, or `approval_id`).

    The approver must be allowed `approval.decide` on the request's resource by policy; either
    way the attempt is audited in the run's tenant's chain. The database also asks for proof of
    who decides, which the kernel's workers do not have: the client's API key, or (without one)
    the operator's role (`[database] operator_dsn`). The run is then woken; if it does
    not take the wake-up within `wake_timeout_s` (no agent worker is up), it sees the decision
    when its wait times out.
    """
    store = ApprovalStore(client.pool)
    approval = await _pending_one(store, run_id, approval_id)
    key = client.principal
    if key is not None:
        # A client with an API key decides as the key's user, named as in the run's tenant.
        if approver not in (key.user, key.qualified):
            raise AccessDenied(
                f"API key {key.key_id} is {key.qualified!r}'s: it cannot decide as {approver!r}"
            )
        approver = key.user_in(approval.tenant)
    from kernos.kernel.policy_store import load_access  # Casbin's adapter: on first use

    access = await load_access(client.settings)
    subject = Subject(run_id, approval.tenant, approver, approval.agent)
    decision = access.decide(subject, DECIDE, approval.resource)
    key_id = key.key_id if key else None
    if not decision.allowed:
        refusal = (
            f"{approver!r} may not decide approvals of {approval.resource} in tenant "
            f"{approval.tenant!r} (no rule allows {DECIDE})"
        )
        await AuditLog(client.pool).record_operator(
            subject, DECIDE, approval.resource, Decision(False, decision.rule, refusal),
            key_id=key_id,
        )  # fmt: skip
        raise AccessDenied(refusal)
    # Recorded and audited together by the owner's function, which asks for the approver's
    # proof: the key itself, or the operator's role.
    if key is not None:
        if client.api_key is None:
            raise AccessDenied(
                f"deciding as API key {key.key_id}'s user needs the key itself, its proof"
            )
        proved = store
    else:
        proved = ApprovalStore(await client.operator_pool("deciding without an API key"))
    decided = await proved.decide(
        approval.id, approver=approver, approve=approve, reason=reason, rule=decision.rule,
        api_key=client.api_key if key is not None else None,
    )  # fmt: skip
    return Decided(approval=decided, woken=await _wake(client, decided, wake_timeout_s))


async def _pending_one(store: ApprovalStore, run_id: str, approval_id: str | None) -> Approval:
    if approval_id is not None:
        approval = await store.get(approval_id)
        if approval.run_id != run_id:
            raise NotFound(f"approval {approval_id} is not of run {run_id!r}")
        return approval
    pending = await store.listing(run_id=run_id)
    if not pending:
        raise NotFound(f"run {run_id!r} has no pending approval")
    if len(pending) > 1:
        listed = ", ".join(f"{a.id} ({a.syscall} on {a.resource})" for a in pending)
        raise InvalidRequest(
            f"run {run_id!r} waits for {len(pending)} approvals; name one: {listed}"
        )
    return pending[0]


async def _wake(client: KernosClient, approval: Approval, timeout_s: float) -> bool:
    status = "approved" if approval.status == "approved" else "denied"
    handle = client.temporal.get_workflow_handle(approval.run_id)
    try:
        await handle.start_update(
            "approval",
            ApprovalNotice(approval_id=approval.id, status=status),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            rpc_timeout=timedelta(seconds=timeout_s),
        )
    except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
        # No worker took it, or the run has ended: the decision stands in the kernel's row.
        return False
    return True
