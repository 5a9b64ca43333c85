"""The access check: every activity on a kernel worker passes here before it runs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace
from pydantic import BaseModel
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from kernos.activities import heartbeat
from kernos.activities.failures import Sealer, public_type, sealed_failure, to_application_error
from kernos.activities.request_decoding import Undecodable
from kernos.kernel.access import Decision, Subject
from kernos.kernel.audit import AttemptKey
from kernos.kernel.claims import Claims, Served, false_claim, lost_affinity
from kernos.kernel.errors import (
    AccessDenied,
    AffinityLost,
    ApprovalRequired,
    KernosError,
    TokenBudgetExceeded,
)
from kernos.kernel.identity import Caller, CallerDenied
from kernos.kernel.managers import Kernel
from kernos.kernel.result_seal import error_message, result_message, sign, signing_key
from kernos.kernel.run_store import RunRecord
from kernos.kernel.syscall_table import SYSCALLS, Syscall
from kernos.kernel.syscalls import SyscallRequest, SyscallResponse, TokenUsage

#: The run on whose behalf the current activity runs, as the kernel resolved it.
CALLER: ContextVar[Caller] = ContextVar("kernos_caller")
#: The rule an approval row names when the agent asked for the approval (`approval.ask`).
ASKED_BY_AGENT = "asked for by the agent (its tool needs a human's approval)"


def caller() -> Subject:
    """The current syscall's caller; only set inside a kernel activity."""
    return CALLER.get().subject


def admitted() -> RunRecord:
    """The kernel's record of the current syscall's run, as admitted (its status not kept)."""
    return CALLER.get().record


def claims_of(info: activity.Info) -> Claims:
    """What the workflow chose when it scheduled the activity, as Temporal reports it."""
    return Claims(
        workflow_type=info.workflow_type,
        task_queue=info.task_queue,
        priority=info.priority,
        start_to_close=info.start_to_close_timeout,
        heartbeat=info.heartbeat_timeout,
        schedule_to_close=info.schedule_to_close_timeout,
        retry_policy=info.retry_policy,
        waited=info.started_time - info.current_attempt_scheduled_time,
    )


def _false_input(syscall: Syscall[Any, Any], args: Sequence[Any]) -> str | None:
    """Whether the activity carries what the syscall takes: one request of its type."""
    if len(args) == 1 and isinstance(args[0], syscall.request):
        return None
    if len(args) == 1 and isinstance(args[0], Undecodable):
        return f"the {syscall.name} request is invalid: {args[0].problem}"
    sent = ", ".join(type(arg).__name__ for arg in args) or "nothing"
    return f"{syscall.name} takes one {syscall.request.__name__}; the workflow sent {sent}"


class SyscallInterceptor(Interceptor):
    """Adds identity, the check of claims, access decision, audit and error translation.

    One per worker: `served` is what that worker serves (its queues, an LLM instance's model, a
    tool worker's tools), which the claims of its activities are checked against.
    """

    def __init__(self, kernel: Kernel, served: Served) -> None:
        self.kernel = kernel
        self.served = served
        secret = kernel.settings.temporal.result_signing_key
        #: What results and errors are signed with (`kernel.result_seal`); None: not signed.
        self.result_key = signing_key(secret.get_secret_value()) if secret is not None else None
        #: What heartbeats are signed with (kernel workers only): derived from the same secret.
        self.heartbeat_key = (
            hashlib.sha256(b"kernos-heartbeat\x00" + secret.get_secret_value().encode()).digest()
            if secret is not None
            else None
        )

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity of the worker."""
        return _SyscallInbound(next, self.kernel, self.served, self.result_key, self.heartbeat_key)


class _SyscallInbound(ActivityInboundInterceptor):
    def __init__(
        self,
        next: ActivityInboundInterceptor,
        kernel: Kernel,
        served: Served,
        result_key: Ed25519PrivateKey | None,
        heartbeat_key: bytes | None,
    ) -> None:
        super().__init__(next)
        self.kernel = kernel
        self.served = served
        self.result_key = result_key
        self.heartbeat_key = heartbeat_key

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        heartbeat.SIGNING.set(self.heartbeat_key)
        # Registration takes only the table's syscalls, so an activity is always one of them.
        syscall = SYSCALLS[info.activity_type]
        key = AttemptKey(
            workflow_id=info.workflow_id or "",
            execution_run_id=info.workflow_run_id or "",
            activity_id=info.activity_id,
            attempt=info.attempt,
        )
        request = input.args[0] if input.args else None
        asked = request.resource() if isinstance(request, SyscallRequest) else syscall.name
        answered = request if isinstance(request, BaseModel) else None
        run = (key.workflow_id, key.execution_run_id)
        sealer: Sealer | None = None
        if self.result_key is not None:
            result_key = self.result_key

            def sealer(kind: str, message: str, fields: Mapping[str, Any]) -> str:
                signed = error_message(run, syscall.name, answered, kind, message, fields)
                return sign(result_key, signed)

        try:
            try:
                caller = await self.kernel.identity.resolve(key.workflow_id, key.execution_run_id)
            except CallerDenied as denied:
                if syscall.policy_checked:
                    await self.kernel.audit.record_decision(
                        key,
                        denied.subject,
                        syscall.name,
                        asked,
                        Decision(False, None, str(denied), basis="identity"),
                    )
                raise
            CALLER.set(caller)
            subject = caller.subject
            claims = claims_of(info)
            false = _false_input(syscall, input.args) or false_claim(
                syscall, claims, request, caller.record, self.served
            )
            lost = None if false else lost_affinity(claims, caller.record, self.served)
            if false or lost:
                refusal = Decision(False, None, false or lost, basis="claim")
                await self.kernel.audit.record_decision(key, subject, syscall.name, asked, refusal)
                raise AccessDenied(false) if false else AffinityLost(lost or "")
            if not syscall.policy_checked:
                result = await super().execute_activity(input)
            else:
                result = await self._decided(input, key, subject, syscall, request)
        except KernosError as exc:
            # Not chained: the server drops a pending activity's failure past a few KiB (it
            # shows "Failure exceeds size limit" instead), and a chain of HTTP-client stack
            # traces gets there. The message carries the cause; the worker's log has the trace.
            activity.logger.info("syscall %s failed: %r", syscall.name, exc, exc_info=exc)
            raise to_application_error(exc, sealer) from None
        except Exception as exc:
            if sealer is None:
                raise
            raise sealed_failure(exc, sealer) from exc
        if self.result_key is None or not isinstance(result, SyscallResponse):
            return result
        signed = result_message(run, syscall.name, answered, result)
        return result.model_copy(update={"seal": sign(self.result_key, signed)})

    async def _decided(
        self,
        input: ExecuteActivityInput,
        key: AttemptKey,
        subject: Subject,
        syscall: Syscall[Any, Any],
        request: object,
    ) -> Any:
        """Decide, audit, and run the syscall if allowed; record what it came to."""
        name = syscall.name
        resource = self.served.resource(syscall, request)
        decision = self.kernel.access.decide(subject, name, resource)
        decision, metered, pending = await self._approval(
            key, subject, syscall, resource, request, decision
        )
        decision = await self.kernel.audit.record_decision(
            key, subject, name, resource, decision, metered=metered
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
            reason = decision.reason or f"{name} on {resource} denied"
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
            if self.served.kind == "llm":
                await self._served(admitted())
            return result
        except BaseException as exc:
            error_type = public_type(exc) if isinstance(exc, KernosError) else type(exc).__name__
            raise
        finally:
            await self.kernel.audit.record_result(
                key,
                name,
                error_type=error_type,
                usage=usage,
                duration_ms=(time.monotonic() - started) * 1000,
            )

    async def _served(self, record: RunRecord) -> None:
        """Note that this instance served the run, and its session, for cache affinity.

        The session's record is a hint for its next run, written when this instance first serves
        the session (lately): a failure to write it is logged, never the syscall's (its result
        is in hand).
        """
        new_session = self.served.recent.note(record)
        session, instance, model = record.spec.session, self.served.instance, self.served.model
        if not (new_session and session and self.served.affinity_queue and instance and model):
            return
        try:
            await self.kernel.sessions.served(
                record.tenant, record.user, record.agent, session, model, instance
            )
        except psycopg.Error as exc:
            activity.logger.warning("session %s: instance not recorded (%s)", session, exc)

    async def _approval(
        self,
        key: AttemptKey,
        subject: Subject,
        syscall: Syscall[Any, Any],
        resource: str,
        request: object,
        decision: Decision,
    ) -> tuple[Decision, bool, bool]:
        """The decision once approvals are counted: (decision, metered, waiting for a human).

        What needs a human: the syscall itself (an `a` rule on its resource, or a syscall that
        asks for one), or, for a metered one, going past the tenant's budget (an `a` rule on
        `budget:<tenant>`), which then waits instead of failing.
        """
        metered = syscall.metered
        target, rule = resource, decision.approval_rule
        if rule is None and syscall.asks_human:
            rule = ASKED_BY_AGENT
        if metered and decision.allowed and rule is None:
            budget = f"budget:{subject.tenant}"
            overrun = self.kernel.access.approval_rule(subject, syscall.name, budget)
            if overrun is not None and await self.kernel.audit.over_budget(subject.tenant):
                target, rule = budget, overrun
        if not decision.allowed or rule is None:
            return decision, metered, False
        try:
            gate = await self.kernel.approvals.gate(
                key=f"{key.workflow_id}/{key.execution_run_id}/{key.activity_id}",
                subject=subject,
                syscall=syscall.name,
                resource=target,
                request=request.model_dump(mode="json")
                if isinstance(request, SyscallRequest)
                else {},
                rule=rule,
                timeout_s=self.kernel.settings.limits.approval_timeout_s,
            )
        except AccessDenied as exc:  # the run waits for as many humans as it may: refused
            refused = Decision(False, rule=decision.rule, reason=str(exc), basis="approval")
            return refused, metered, False
        approved = Decision(
            allowed=gate.state == "approved",
            rule=f"{decision.rule}; {rule}",
            reason=gate.explain(),
            basis="approval",
        )
        # An approved overrun is not refused for the budget it was approved past.
        return approved, metered and target == resource, gate.state == "pending"
