"""The workflow side of syscalls: each becomes an activity, dispatched by the scheduler."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from pydantic_core import to_json

    from kernos.kernel import errors, result_seal, scheduler, visibility
    from kernos.kernel.syscall_table import (
        LLM_CHAT,
        LLM_COMPACT,
        LLM_CONTINUE,
        RUN_FINISH,
        TOOL_CALL,
        Syscall,
        retry_policy,
    )
    from kernos.kernel.syscalls import (
        Compaction,
        CompactRequest,
        LLMContinuation,
        LLMRequest,
        LLMResponse,
        RunInput,
        RunOutcome,
        SyscallResponse,
        TokenUsage,
        ToolCallRequest,
        ToolResult,
    )
    from kernos.workflows.syscall_turns import SyscallTurns

Result = TypeVar("Result", LLMResponse, Compaction)
Request = TypeVar("Request", bound=BaseModel)
Response = TypeVar("Response", bound=BaseModel)
Answer = TypeVar("Answer")
#: A decision announced while the kernel was being asked wakes the syscall at once; before this
#: patch the wake-up was lost and the syscall slept until the approval's timeout.
DECIDED_WHILE_ASKED_PATCH = "kernos-decision-while-asked-wakes"
#: Once the first wait for an approval has ended, how long each later wait lasts: the kernel's
#: own deadline is then at most moments away.
_RECHECK_S = 5.0

#: The syscalls of the run whose code is running, set by `AgentRun` for its agent's tasks: a
#: framework's model or tool class (kernos.adapters), made by code that never sees the run,
#: calls its own run's syscalls through it.
CURRENT: ContextVar[SyscallDispatcher] = ContextVar("kernos_current_run")

#: An instance's own queue turned the call away: it goes to the model's pool.
AFFINITY_LOST = errors.AffinityLost.__name__
#: Kernel errors that cross the activity boundary back into agent code, by type name.
_RAISED_IN_AGENT: dict[str, type[errors.KernosError]] = {
    cls.__name__: cls
    for cls in (
        errors.AccessDenied,
        errors.TokenBudgetExceeded,
        errors.InvalidRequest,
        errors.NotFound,
        errors.PayloadTooLarge,
        errors.InvalidPath,
        errors.VersionConflict,
        errors.LLMBadRequest,
        errors.ContextTooLong,
        errors.LLMRateLimited,
        errors.LLMUnavailable,
        errors.ScriptExhausted,
        errors.UnknownTool,
        errors.ToolOutcomeUnknown,
        errors.ApprovalRequired,
        # Only as a pool's host writes it: elsewhere an unsigned one is refused before this.
        errors.UnsealedResult,
    )
}


def _translate(exc: ActivityError) -> errors.KernosError | None:
    """The kernel error an activity failure stands for, if it is one agents may catch."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in _RAISED_IN_AGENT:
        return _RAISED_IN_AGENT[cause.type].rebuilt(cause.message, error_fields(cause))
    return None


def error_fields(cause: ApplicationError) -> dict[str, Any]:
    """The fields a kernel error's failure carries (its first detail, an object), if any.

    Only an error type that has fields carries them: any other's details are not read.
    """
    first = cause.details[0] if cause.details else None
    if isinstance(first, dict) and errors.carried_fields(cause.type or ""):
        return first
    return {}


def _raise_translated(exc: ActivityError) -> NoReturn:
    """Raise the kernel error an activity failure stands for, or the failure itself."""
    translated = _translate(exc)
    if translated is None:
        raise exc
    raise translated from exc


class SyscallDispatcher:
    """Turns an agent's requests into activities, and keeps the run's token count."""

    def __init__(self, run: RunInput) -> None:
        self.run = run
        self.usage = TokenUsage()
        self.syscalls = 0
        #: The instance that last served each model, where cache affinity sends the next call
        #: (at first, the instance that served the run's session last, as the kernel recorded).
        self._instances: dict[str, str] = dict(run.instances)
        self._retry = retry_policy(run.limits)
        #: Every syscall of the run carries the priority the kernel fixed at admission.
        self._priority = scheduler.priority_of(run.spec, run.scheduling)
        #: Decisions announced to this run (`kernos approve`), and syscalls waiting for one.
        self._decisions = 0
        self._waiting = 0
        #: Turns for syscalls in flight: past the run's limit, the next one waits for one.
        self.turns = SyscallTurns(
            run.limits.max_pending_syscalls,
            run.carried.held_turns if run.carried is not None else (),
        )

    def approval_decided(self) -> None:
        """Wake the syscalls that wait for an approval; each asks the kernel again.

        Only a wake-up: whether a syscall may go on is decided by the kernel's approval row.
        """
        self._decisions += 1

    async def _approved(
        self,
        syscall: Syscall[Any, Any],
        request: BaseModel,
        execute: Callable[[], Awaitable[Answer]],
        *,
        cancellation_waits: bool = False,
    ) -> Answer:
        """Run a syscall; while the kernel says it awaits a human's approval, wait for one.

        The run shows `awaiting-approval` in its status meanwhile. A wait ends at a decision or
        at the approval's timeout; either way the kernel is asked again and decides. What comes
        back is checked first: only a result or error sealed by a kernel worker gets further.
        """
        self._check_size(syscall, request)
        timeout = self.run.limits.approval_timeout_s
        while True:
            asked = self._decisions
            try:
                answer = await self.turns.run(
                    execute,
                    syscall.start_to_close(self.run.limits),
                    cancellation_waits=cancellation_waits,
                )
                return self._unsealed(syscall, request, answer)
            except ActivityError as exc:
                self._check_failure(syscall, request, exc)
                cause = exc.cause
                if not (isinstance(cause, ApplicationError) and cause.type == "ApprovalRequired"):
                    raise
                if self._decisions > asked and workflow.patched(DECIDED_WHILE_ASKED_PATCH):
                    # A decision came before the run read the kernel's answer (a replacement
                    # worker replaying the run sees both in one activation): it may be this
                    # syscall's, so ask again now rather than wait for another.
                    continue
                seen = self._decisions
                self._wait_starts(cause.message)
                try:
                    with contextlib.suppress(TimeoutError):
                        await workflow.wait_condition(self._decided_after(seen), timeout=timeout)
                finally:
                    self._wait_ends()
                timeout = _RECHECK_S

    def _check_size(self, syscall: Syscall[Any, Any], request: BaseModel) -> None:
        """PayloadTooLarge for a request the run's limits would not let reach the kernel."""
        size, limit = len(to_json(request)), self.run.limits.max_payload_bytes
        if size > limit:
            raise errors.PayloadTooLarge(
                f"the {syscall.name} request", size, limit, "[limits] max_payload_bytes"
            )

    def _unsealed(self, syscall: Syscall[Any, Any], request: BaseModel, result: Answer) -> Answer:
        """The result without its seal, once checked; UnsealedResult if no kernel worker's."""
        key = result_seal.checking()
        if key is None or syscall.response is type(None):
            return result
        if not isinstance(result, SyscallResponse):
            # An empty completion decodes to None for any type: nothing a kernel worker sends.
            raise self._unsealed_error(syscall, "result")
        if key != result_seal.BY_HOST:
            signed = result_seal.result_message(self._run_ids(), syscall.name, request, result)
            if not result_seal.verified(key, signed, result.seal):
                raise self._unsealed_error(syscall, "result")
        return result.model_copy(update={"seal": None})

    def _check_failure(
        self, syscall: Syscall[Any, Any], request: BaseModel, exc: ActivityError
    ) -> None:
        """Raise UnsealedResult for an activity's error that a kernel worker did not sign.

        Only errors that workers raise (ApplicationError) are signed; timeouts and
        cancellations come from the server. Behind a pool's host, the host has replaced each
        error it could not verify with an UnsealedResult of its own, which passes on.
        """
        cause = exc.cause
        key = result_seal.checking()
        if key is None or key == result_seal.BY_HOST or not isinstance(cause, ApplicationError):
            return
        kind = cause.type or type(cause).__name__
        signed = result_seal.error_message(
            self._run_ids(), syscall.name, request, kind, cause.message, error_fields(cause)
        )
        if not (cause.details and result_seal.verified(key, signed, cause.details[-1])):
            raise self._unsealed_error(syscall, f"{kind} error") from None

    def _run_ids(self) -> tuple[str, str]:
        info = workflow.info()
        return info.workflow_id, info.run_id

    def _unsealed_error(self, syscall: Syscall[Any, Any], what: str) -> errors.UnsealedResult:
        workflow.logger.warning(
            "%s of %s was not sealed by a kernel worker: refused", what, syscall.name
        )
        return errors.UnsealedResult(result_seal.refusal(syscall.name, what))

    def _decided_after(self, seen: int) -> Callable[[], bool]:
        return lambda: self._decisions > seen

    def _wait_starts(self, why: str) -> None:
        if self._waiting == 0:
            workflow.upsert_search_attributes([visibility.STATUS.value_set("awaiting-approval")])
        self._waiting += 1
        workflow.set_current_details(f"**awaiting approval**: {why}")

    def _wait_ends(self) -> None:
        self._waiting -= 1
        if self._waiting == 0:
            workflow.upsert_search_attributes([visibility.STATUS.value_set("running")])

    async def llm_chat(self, request: LLMRequest) -> LLMResponse:
        """`llm.chat` on the request's model pool, at the run's priority.

        Under round-robin the kernel stops the generation at the end of each time slice; the
        continuation (`llm.continue`, naming the suspended generation) queues again behind
        whatever waits, until the generation ends.
        """
        detail = f"{request.model}, {len(request.messages)} messages"
        response = await self._llm(LLM_CHAT, request, request.model, detail)
        slices, usage = 1, response.usage
        while response.continuation is not None:
            slices += 1
            continuation = LLMContinuation(model=request.model, generation=response.continuation)
            detail = f"{request.model}, slice {slices}"
            response = await self._llm(LLM_CONTINUE, continuation, request.model, detail)
            usage = usage + response.usage
        return response if slices == 1 else response.model_copy(update={"usage": usage})

    async def llm_compact(self, request: CompactRequest) -> Compaction:
        """`llm.compact`: the model summarises the conversation's older turns in their place."""
        return await self._llm(LLM_COMPACT, request, request.model, request.model)

    async def tool_call(self, request: ToolCallRequest) -> ToolResult:
        """`tool.call` on the tool's own queue; a tool the kernel did not register fails here.

        Bad arguments, the tool's own errors and timeouts come back as a result (`ok` false) for
        the model to read; a denial raises AccessDenied.
        """
        server, separator, _ = request.name.partition("__")
        if request.name in self.run.tools:
            queue = f"{self.run.tool_queue_prefix}{request.name}"
        elif separator and server in self.run.mcp_servers:
            # The server's worker knows its tools, and names an unknown one.
            queue = f"{self.run.tool_queue_prefix}{server}"
        else:
            # Its queue would have no worker: the call would wait forever.
            raise errors.UnknownTool(request.name, self.run.tools)
        detail = request.name + (f" {request.call_id}" if request.call_id else "")
        return await self.call(TOOL_CALL, request, detail, task_queue=queue)

    async def call(
        self,
        syscall: Syscall[Request, Response],
        request: Request,
        detail: str = "",
        *,
        task_queue: str | None = None,
    ) -> Response:
        """Syscall `syscall` with `request`, as the table declares it; its response.

        It waits on the kernel queue (conversations, memory, files) unless another is named (a
        tool's). Its summary in the run's history is the syscall's name and `detail`.
        """
        try:
            result: Response = await self._approved(
                syscall,
                request,
                lambda: workflow.execute_activity(
                    syscall.name,
                    request,
                    result_type=syscall.response,
                    task_queue=task_queue or self.run.kernel_task_queue,
                    priority=self._priority,
                    start_to_close_timeout=syscall.start_to_close(self.run.limits),
                    retry_policy=self._retry,
                    summary=f"{syscall.name} {detail}".rstrip(),
                ),
            )
        except ActivityError as exc:
            _raise_translated(exc)
        self.syscalls += 1
        return result

    async def _llm(
        self,
        syscall: Syscall[Any, Result],
        request: LLMRequest | LLMContinuation | CompactRequest,
        model: str,
        detail: str,
    ) -> Result:
        dispatch = scheduler.dispatch_llm(self.run, model, self._instances.get(model))
        try:
            response = await self._execute_llm(syscall, request, dispatch, detail)
        except ActivityError as exc:
            cause = exc.cause
            if not (
                dispatch.schedule_to_start is not None
                and (
                    (
                        isinstance(cause, ActivityTimeout)
                        and cause.type == TimeoutType.SCHEDULE_TO_START
                    )
                    or (isinstance(cause, ApplicationError) and cause.type == AFFINITY_LOST)
                )
            ):
                _raise_translated(exc)
            # The instance with the run's cache is busy, gone, or restarted: any will do.
            self._instances.pop(model, None)
            dispatch = scheduler.dispatch_llm(self.run, model)
            try:
                response = await self._execute_llm(syscall, request, dispatch, detail)
            except ActivityError as retried:
                _raise_translated(retried)
        if isinstance(response, LLMResponse) and response.instance is not None:
            self._instances[model] = response.instance
        self.syscalls += 1
        self.usage = self.usage + response.usage
        workflow.set_current_details(
            f"**{self.run.spec.agent}** for `{self.run.spec.tenant}/{self.run.spec.user}`: "
            f"{self.syscalls} syscalls, {self.usage.input_tokens} input and "
            f"{self.usage.output_tokens} output tokens so far"
        )
        return response

    async def _execute_llm(
        self,
        syscall: Syscall[Any, Result],
        request: LLMRequest | LLMContinuation | CompactRequest,
        dispatch: scheduler.Dispatch,
        detail: str,
    ) -> Result:
        limits = self.run.limits
        return await self._approved(
            syscall,
            request,
            lambda: workflow.execute_activity(
                syscall.name,
                request,
                result_type=syscall.response,
                task_queue=dispatch.task_queue,
                priority=dispatch.priority,
                schedule_to_start_timeout=dispatch.schedule_to_start,
                start_to_close_timeout=syscall.start_to_close(limits),
                heartbeat_timeout=syscall.heartbeat(limits),
                retry_policy=self._retry,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{syscall.name} {detail}",
            ),
            cancellation_waits=True,
        )

    async def finish(self, outcome: RunOutcome) -> None:
        """`run.finish`: the kernel records the outcome."""
        await self.turns.run(
            lambda: workflow.execute_activity(
                RUN_FINISH.name,
                outcome,
                task_queue=self.run.kernel_task_queue,
                priority=self._priority,
                start_to_close_timeout=RUN_FINISH.start_to_close(self.run.limits),
                retry_policy=self._retry,
                summary=f"{RUN_FINISH.name} {outcome.status}",
            ),
            RUN_FINISH.start_to_close(self.run.limits),
        )
