"""`tool.call`: one tool's calls, on its own task queue, recorded once per syscall."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from temporalio import activity

from kernos.activities.failures import public_type
from kernos.activities.interceptor import caller
from kernos.kernel.config import Settings
from kernos.kernel.errors import InvalidRequest, KernosError, ToolOutcomeUnknown, UnknownTool
from kernos.kernel.file_store import StorageStore
from kernos.kernel.syscall_table import TOOL_CALL
from kernos.kernel.syscalls import ToolCallRequest, ToolResult
from kernos.kernel.tools import RunnableTool, ToolArgumentsInvalid, ToolContext
from kernos.kernel.tools.ledger import CallKey, ToolCallStore

log = logging.getLogger(__name__)

ToolActivity = Callable[[ToolCallRequest], Awaitable[ToolResult]]


class ToolActivities:
    """Builds each tool's `tool.call` activity, for a worker on that tool's queue."""

    def __init__(
        self, ledger: ToolCallStore, settings: Settings, storage: StorageStore | None = None
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.storage = storage

    def activity_for(self, tool: RunnableTool) -> ToolActivity:
        """The activity that runs `tool`, and only it."""

        @activity.defn(name=TOOL_CALL.name)
        async def call(request: ToolCallRequest) -> ToolResult:
            return await self._call(tool, request)

        return call

    def activity_for_server(self, server: str, tools: Mapping[str, RunnableTool]) -> ToolActivity:
        """The activity that runs the tools of MCP server `server`, on its one queue."""

        @activity.defn(name=TOOL_CALL.name)
        async def call(request: ToolCallRequest) -> ToolResult:
            tool = tools.get(request.name)
            if tool is None:
                raise UnknownTool(request.name, list(tools))
            return await self._call(tool, request)

        return call

    async def _call(self, tool: RunnableTool, request: ToolCallRequest) -> ToolResult:
        if request.name != tool.name:
            # The policy decided on the tool the request names; run no other.
            raise InvalidRequest(
                f"a call of tool {request.name!r} reached the queue of {tool.name!r}"
            )

        def answer(
            content: str, error_type: str | None = None, replayed: bool = False
        ) -> ToolResult:
            return ToolResult(
                call_id=request.call_id, name=tool.name, ok=error_type is None,
                content=_storable(content), error_type=error_type, replayed=replayed,
            )  # fmt: skip

        limits = self.settings.tools
        size = len(request.arguments.encode("utf-8", "surrogatepass"))
        if size > limits.max_argument_bytes:
            return answer(
                f"the arguments are {size} bytes, over the limit of {limits.max_argument_bytes} "
                "bytes ([tools] max_argument_bytes)",
                "PayloadTooLarge",
            )
        try:
            arguments = tool.parse(request.arguments)
        except ToolArgumentsInvalid as exc:
            return answer(str(exc), "ToolArgumentsInvalid")

        info = activity.info()
        key = CallKey(info.workflow_id or "", info.workflow_run_id or "", info.activity_id)
        earlier = await self.ledger.begin(
            key, caller(), tool.name, request.call_id, _storable(request.arguments)
        )
        number = 1 if earlier is None else earlier.attempts + 1
        if earlier is not None and earlier.status != "started":
            return answer(earlier.result or "", earlier.error_type, replayed=True)
        if earlier is not None and tool.irreversible and not tool.idempotent:
            outcome = (
                f"tool {tool.name!r} is irreversible and its attempt {earlier.attempts} of this "
                "call started but never reported back: it may have acted, so the kernel does "
                "not run it again; check its effect before calling it anew"
            )
            await self.ledger.finish(
                key, attempt=number, ok=False, result=outcome, error_type="ToolOutcomeUnknown"
            )
            raise ToolOutcomeUnknown(outcome)

        context = ToolContext(
            caller=caller(),
            idempotency_key=key.idempotency_key(),
            attempt=info.attempt,
            settings=self.settings,
            storage=self.storage,
        )
        result = await self._invoke(tool, arguments, context, answer)
        await self.ledger.finish(
            key, attempt=number, ok=result.ok, result=result.content, error_type=result.error_type
        )
        return result

    async def _invoke(
        self,
        tool: RunnableTool,
        arguments: object,
        context: ToolContext,
        answer: Callable[[str, str | None], ToolResult],
    ) -> ToolResult:
        """Run the tool; whatever it raises is its answer to the model, not a failed run."""
        try:
            output = await tool.invoke(arguments, context)
        except TimeoutError:
            return answer(
                f"tool {tool.name!r} did not finish within {tool.timeout_s} s", "ToolTimeout"
            )
        except KernosError as exc:
            return answer(str(exc), public_type(exc))
        except Exception as exc:
            log.warning("tool %s raised", tool.name, exc_info=exc)
            return answer(str(exc) or type(exc).__name__, type(exc).__name__)
        output = _storable(output)
        size = len(output.encode("utf-8", "surrogatepass"))
        limit = self.settings.tools.max_result_bytes
        if size > limit:
            return answer(
                f"tool {tool.name!r} returned {size} bytes, over the limit of {limit} bytes "
                "([tools] max_result_bytes)",
                "PayloadTooLarge",
            )
        return answer(output, None)


def _storable(text: str) -> str:
    """Text PostgreSQL can hold: no NUL, no lone surrogates (decoded JSON can carry both)."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
