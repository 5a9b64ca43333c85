"""The access check: every activity on a kernel worker passes here before it runs."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from kernos.activities.errors import public_type, to_application_error
from kernos.kernel.access import Decision, Subject
from kernos.kernel.audit import AttemptKey
from kernos.kernel.errors import (
    AccessDenied,
    ApprovalRequired,
    KernosError,
    TokenBudgetExceeded,
)
from kernos.kernel.identity import CallerDenied
from kernos.kernel.kernel import Kernel
from kernos.kernel.syscalls import SyscallRequest, TokenUsage

#: Activities that are the kernel's own bookkeeping of a run: identity-checked, not policy-checked.
LIFECYCLE = frozenset({"run.finish"})
#: Syscalls that spend tokens, and so are refused once the tenant's budget is used.
METERED = frozenset({"llm.chat", "llm.continue", "llm.compact"})

#: The run on whose behalf the current activity runs, as the kernel resolved it.
CALLER: ContextVar[Subject] = ContextVar("kernos_caller")


def caller() -> Subject:
    """The current syscall's caller; only set inside a kernel activity."""
    return CALLER.get()


class SyscallInterceptor(Interceptor):
    """Adds identity, access decision, audit and error translation to kernel activities."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity of the worker."""
        return _SyscallInbound(next, self.kernel)


class _SyscallInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, kernel: Kernel) -> None:
        super().__init__(next)
        self.kernel = kernel

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        syscall = info.activity_type
        key = AttemptKey(
            workflow_id=info.workflow_id or "",
            execution_run_id=info.workflow_run_id or "",
            activity_id=info.activity_id,
            attempt=info.attempt,
        )
        request = input.args[0] if input.args else None
        resource = request.resource() if isinstance(request, SyscallRequest) else syscall
        try:
            try:
                subject = await self.kernel.identity.resolve(key.workflow_id, key.execution_run_id)
            except CallerDenied as denied:
                if syscall not in LIFECYCLE:
                    await self.kernel.audit.record_decision(
                        key,
                        denied.subject,
                        syscall,
                        resource,
                        Decision(False, None, str(denied), basis="identity"),
                    )
                raise
            CALLER.set(subject)
            if syscall in LIFECYCLE:
                return await super().execute_activity(input)
            decision = self.kernel.access.decide(subject, syscall, resource)
            decision, metered, pending = await self._approval(
                key, subject, syscall, resource, request, decision
            )
            decision = await self.kernel.audit.record_decision(
                key, subject, syscall, resource, decision, metered=metered
            )
            trace.get_current_span().set_attributes(
                {
                    "kernos.run_id": subject.run_id,
                    "kernos.tenant": subject.tenant,
                    "kernos.user": subject.user,
                    "kernos.agent": subject.agent,
                    "kernos.resource": resource,
                    "kernos.decision": decision.word,
                }
            )
            if not decision.allowed:
                reason = decision.reason or f"{syscall} on {resource} denied"
                if decision.basis == "budget":
                    raise TokenBudgetExceeded(reason)
                if decision.basis == "approval" and pending:
                    raise ApprovalRequired(reason)
                raise AccessDenied(reason)
            started = time.monotonic()
            error_type: str | None = None
            usage = TokenUsage()
            try:
                result = await super().execute_activity(input)
                if isinstance(getattr(result, "usage", None), TokenUsage):
                    usage = result.usage
                return result
            except BaseException as exc:
                error_type = (
                    public_type(exc) if isinstance(exc, KernosError) else type(exc).__name__
                )
                raise
            finally:
                await self.kernel.audit.record_result(
                    key,
                    subject,
                    syscall,
                    error_type=error_type,
                    usage=usage,
                    duration_ms=(time.monotonic() - started) * 1000,
                )
        except KernosError as exc:
            # Not chained: the server drops a pending activity's failure past a few KiB (it
            # shows "Failure exceeds size limit" instead), and a chain of HTTP-client stack
            # traces gets there. The message carries the cause; the worker's log has the trace.
            activity.logger.info("syscall %s failed: %r", syscall, exc, exc_info=exc)
            raise to_application_error(exc) from None

    async def _approval(
        self,
        key: AttemptKey,
        subject: Subject,
        syscall: str,
        resource: str,
        request: object,
        decision: Decision,
    ) -> tuple[Decision, bool, bool]:
        """The decision once approvals are counted: (decision, metered, waiting for a human).

        What needs a human: the syscall itself (an `a` rule on its resource), or, for a metered
        one, going past the tenant's budget (an `a` rule on `budget:<tenant>`), which then
        waits instead of failing.
        """
        metered = syscall in METERED
        target, rule = resource, decision.approval_rule
        if metered and decision.allowed and rule is None:
            budget = f"budget:{subject.tenant}"
            overrun = self.kernel.access.approval_rule(subject, syscall, budget)
            if overrun is not None and await self.kernel.audit.over_budget(subject.tenant):
                target, rule = budget, overrun
        if not decision.allowed or rule is None:
            return decision, metered, False
        gate = await self.kernel.approvals.gate(
            key=f"{key.workflow_id}/{key.execution_run_id}/{key.activity_id}",
            subject=subject,
            syscall=syscall,
            resource=target,
            request=request.model_dump(mode="json") if isinstance(request, SyscallRequest) else {},
            rule=rule,
            timeout_s=self.kernel.settings.limits.approval_timeout_s,
        )
        approved = Decision(
            allowed=gate.state == "approved",
            rule=f"{decision.rule}; {rule}",
            reason=gate.explain(),
            basis="approval",
        )
        # An approved overrun is not refused for the budget it was approved past.
        return approved, metered and target == resource, gate.state == "pending"
