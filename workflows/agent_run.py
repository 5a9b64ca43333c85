"""`AgentRun`: the durable process of one agent run."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from kernos.agent import Done, StepAgent
    from kernos.kernel import visibility
    from kernos.kernel.errors import InvalidRequest
    from kernos.kernel.syscall_table import AGENT_RUN
    from kernos.kernel.syscalls import ApprovalNotice, Carried, RunInput, RunOutcome, RunResult
    from kernos.workflows import agent_registry
    from kernos.workflows.dispatcher import CURRENT, SyscallDispatcher
    from kernos.workflows.framework_errors import kernel_cause


def _describe(exc: BaseException) -> tuple[str, str]:
    """(type name, message) of an agent's failure, as the run's error."""
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type, exc.message
    if isinstance(exc, FailureError):
        return type(exc).__name__, exc.message
    return type(exc).__name__, str(exc)


@workflow.defn(name=AGENT_RUN)
class AgentRun:
    """Runs a registered agent on a task; the kernel records how it ended."""

    @workflow.init
    def __init__(self, input: RunInput) -> None:
        self._dispatcher = SyscallDispatcher(input)

    @workflow.update(name="approval")
    def approval(self, notice: ApprovalNotice) -> None:
        """Wake the run's syscalls that wait for a human's approval (`kernos approve`).

        Only a wake-up: each asks the kernel again, and the kernel's approval row decides.
        """
        self._dispatcher.approval_decided()

    @workflow.run
    async def run(self, input: RunInput) -> RunResult:
        """Instantiate the agent, run it, record the outcome."""
        dispatcher = self._dispatcher
        CURRENT.set(dispatcher)  # this task's context, and the tasks the agent starts
        if input.carried is not None:
            dispatcher.syscalls = input.carried.syscalls
            dispatcher.usage = input.carried.usage
        try:
            agent = agent_registry.load(input.spec.agent)(dispatcher)
            if isinstance(agent, StepAgent):
                output = await self._steps(agent, input, dispatcher)
            else:
                output = await agent.run(input.spec.task)
            if not isinstance(output, str):
                raise InvalidRequest(
                    f"agent {input.spec.agent!r} returned {type(output).__name__}, not str"
                )
        except (asyncio.CancelledError, Exception) as raised:  # noqa: BLE001
            # Any bug in agent code ends the run, named; a framework's error as the kernel's
            # error it wraps.
            exc = kernel_cause(raised)
            if isinstance(exc, asyncio.CancelledError | FailureError):
                if not is_cancelled_exception(exc):
                    await self._fail(dispatcher, exc)
                await self._end(dispatcher, RunOutcome(status="cancelled", error="cancelled"))
                # Raised as asyncio's error, the run closes as Canceled rather than Failed.
                raise asyncio.CancelledError("the run was cancelled") from exc
            await self._fail(dispatcher, exc)
        await self._end(dispatcher, RunOutcome(status="completed", output=output))
        return RunResult(
            run_id=input.run_id, output=output, usage=dispatcher.usage, syscalls=dispatcher.syscalls
        )

    async def _steps(
        self, agent: StepAgent[Any], input: RunInput, dispatcher: SyscallDispatcher
    ) -> str:
        """Advance a step agent until it is done, continuing as new between steps when due."""
        carried = input.carried
        if carried is None:
            state = await agent.start(input.spec.task)
            steps = 0
        else:
            state = agent.state_model.model_validate(carried.state)
            steps = carried.steps
        while True:
            outcome = await agent.step(state)
            steps += 1
            if isinstance(outcome, Done):
                return outcome.output
            state = outcome
            info = workflow.info()
            if (
                info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= input.limits.continue_as_new_events
            ):
                workflow.continue_as_new(
                    input.model_copy(
                        update={
                            "carried": Carried(
                                state=state.model_dump(mode="json"),
                                steps=steps,
                                syscalls=dispatcher.syscalls,
                                usage=dispatcher.usage,
                                held_turns=dispatcher.turns.held_until(),
                            )
                        }
                    )
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
        if not dispatcher.run.reports_end:
            # The kernel records the end as Temporal has it (kernel/run_ends.py): a `run.finish`
            # would cost the run an activity and a workflow task, to say what is not believed.
            return
        try:
            await dispatcher.finish(outcome)
        except ActivityError as exc:
            # Only a refusal gets here (the retry policy is unbounded): a run the kernel never
            # admitted has nothing to record, and its own error is the one worth reporting.
            workflow.logger.warning("the kernel did not record the outcome: %s", exc.cause)
