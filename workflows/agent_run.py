"""`AgentRun`: the durable process of one agent run."""

from __future__ import annotations

import asyncio
from typing import NoReturn

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from kernos.kernel import visibility
    from kernos.kernel.errors import InvalidRequest
    from kernos.kernel.syscalls import RunInput, RunOutcome, RunResult
    from kernos.workflows import registry
    from kernos.workflows.syscalls import SyscallDispatcher


def _describe(exc: BaseException) -> tuple[str, str]:
    """(type name, message) of an agent's failure, as the run's error."""
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type, exc.message
    if isinstance(exc, FailureError):
        return type(exc).__name__, exc.message
    return type(exc).__name__, str(exc)


@workflow.defn(name="AgentRun")
class AgentRun:
    """Runs a registered agent on a task; the kernel records how it ended."""

    @workflow.run
    async def run(self, input: RunInput) -> RunResult:
        """Instantiate the agent, run it, record the outcome."""
        dispatcher = SyscallDispatcher(input)
        try:
            agent = registry.load(input.spec.agent)(dispatcher)
            output = await agent.run(input.spec.task)
            if not isinstance(output, str):
                raise InvalidRequest(
                    f"agent {input.spec.agent!r} returned {type(output).__name__}, not str"
                )
        except (asyncio.CancelledError, FailureError) as exc:
            if not is_cancelled_exception(exc):
                await self._fail(dispatcher, exc)
            await self._end(dispatcher, RunOutcome(status="cancelled", error="cancelled"))
            # Raised as asyncio's error, the run closes as Canceled rather than Failed.
            raise asyncio.CancelledError("the run was cancelled") from exc
        except Exception as exc:  # noqa: BLE001 - any bug in agent code ends the run, named
            await self._fail(dispatcher, exc)
        await self._end(dispatcher, RunOutcome(status="completed", output=output))
        return RunResult(
            run_id=input.run_id, output=output, usage=dispatcher.usage, syscalls=dispatcher.syscalls
        )

    async def _fail(self, dispatcher: SyscallDispatcher, exc: BaseException) -> NoReturn:
        kind, message = _describe(exc)
        await self._end(dispatcher, RunOutcome(status="failed", error=f"{kind}: {message}"))
        raise ApplicationError(message, type=kind, non_retryable=True) from exc

    async def _end(self, dispatcher: SyscallDispatcher, outcome: RunOutcome) -> None:
        outcome = outcome.model_copy(
            update={"usage": dispatcher.usage, "syscalls": dispatcher.syscalls}
        )
        workflow.upsert_search_attributes([visibility.STATUS.value_set(outcome.status)])
        try:
            await dispatcher.finish(outcome)
        except ActivityError as exc:
            # Only a refusal gets here (the retry policy is unbounded): a run the kernel never
            # admitted has nothing to record, and its own error is the one worth reporting.
            workflow.logger.warning("the kernel did not record the outcome: %s", exc.cause)
