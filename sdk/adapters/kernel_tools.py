"""What the framework adapters share: the current run, and a call of a kernel tool.

Used by `kernos.adapters.openai_agents` and `kernos.adapters.langgraph`. A kernel tool's call
is one `tool.call`: the framework's tool hands over the model's arguments and call id, and gets
back what the model reads, the kernel's refusals included.
"""

from __future__ import annotations

from pydantic import ValidationError

from kernos.kernel.errors import AccessDenied, InvalidRequest
from kernos.kernel.syscalls import ToolCallRequest
from kernos.workflows.dispatcher import CURRENT, SyscallDispatcher


def current_run() -> SyscallDispatcher:
    """The syscalls of the run this code runs in; InvalidRequest outside any run."""
    dispatcher = CURRENT.get(None)
    if dispatcher is None:
        raise InvalidRequest(
            "a kernos model or tool was called outside a kernos run: register the agent with "
            "kernos ([agents], or the adapter's wrap) rather than running it yourself"
        )
    return dispatcher


async def called(name: str, arguments: str, call_id: str) -> str:
    """The tool's answer to the model: its output, or why the kernel refused the call."""
    try:
        request = ToolCallRequest(name=name, arguments=arguments, call_id=call_id)
    except ValidationError as exc:  # arguments over any limit, say: the model's to mend
        return f"error (InvalidRequest): {exc.errors()[0]['msg']}"
    try:
        result = await current_run().tool_call(request)
    except (AccessDenied, InvalidRequest) as exc:
        # The model reads the refusal as the tool's answer, as it reads a tool's own error.
        return f"error ({type(exc).__name__}): {exc}"
    return result.message().content
