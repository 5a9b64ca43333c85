"""The tool syscalls' types: `tool.call` and what it came to; `approval.ask`.

`approval.ask` is a human's approval for a tool the agent runs itself.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from kernos.kernel.syscalls.common import SyscallRequest, SyscallResponse, no_nul
from kernos.kernel.syscalls.llm_calls import MAX_TOOL_ARGUMENTS, Message, ToolName


def _stored(value: str, info: ValidationInfo) -> str:
    return no_nul(value, f"tool call's {info.field_name}")


class ToolCallRequest(SyscallRequest):
    """`tool.call`: run one registered tool with the model's (or the agent's) arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ToolName
    arguments: str = Field(default="{}", max_length=MAX_TOOL_ARGUMENTS)
    """A JSON object, as text: validated against the tool's parameters by the kernel."""
    call_id: str = Field(default="", max_length=128)

    _storable = field_validator("arguments", "call_id")(_stored)

    def resource(self) -> str:
        """The tool, as `tool:<name>`."""
        return f"tool:{self.name}"


class ToolResult(SyscallResponse):
    """What a tool call came to: its output, or an error the model can read and act on.

    Bad arguments, a tool's own exception, a timeout or an oversized result are results, not
    failures of the run: the model sees them as the tool's answer.
    """

    call_id: str
    name: str
    ok: bool
    content: str
    """The tool's output as text (JSON for anything but a string), or the error's message."""
    error_type: str | None = None
    replayed: bool = False
    """True when the kernel answered from its record of an earlier attempt of this call."""

    def message(self) -> Message:
        """The tool message that gives this result back to the model."""
        content = self.content if self.ok else f"error ({self.error_type}): {self.content}"
        content = content.replace("\x00", "\ufffd")  # a message is stored; NUL cannot be
        return Message(role="tool", content=content, tool_call_id=self.call_id or None)


class ApprovalAsk(SyscallRequest):
    """`approval.ask`: wait for a human to approve a call of the agent's own tool.

    The tool `tool` would run with `arguments` once a human approves (a framework's
    `needs_approval`); the run waits, as for an `a` rule. The kernel runs nothing: the tool
    runs inside the run once the syscall returns. A denial or an expiry is an AccessDenied,
    which the agent gives its model as the tool's answer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tool: ToolName
    arguments: str = Field(default="{}", max_length=MAX_TOOL_ARGUMENTS)
    """As the model gave them: what the approver reads."""
    call_id: str = Field(default="", max_length=128)
    """The model's id of the call: two identical calls are two approvals."""

    _storable = field_validator("arguments", "call_id")(_stored)

    def resource(self) -> str:
        """The agent's own tool, as `agent-tool:<name>`."""
        return f"agent-tool:{self.tool}"


class ApprovalGiven(SyscallResponse):
    """`approval.ask`'s answer: a human approved this call (a denial is an AccessDenied)."""

    tool: str
    call_id: str
