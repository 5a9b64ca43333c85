"""The kernel's own error, found inside the errors an agent framework wrapped it in.

A framework reports what failed under it in its own types: the OpenAI Agents SDK wraps a tool's
error in `AgentsException`, LangChain a tool's in `ToolException`, and an OpenAI client an error
response in `APIStatusError` (where `kernos.adapters.openai_transport` leaves the kernel's error
on the response). A run that ends on such an error ends as the kernel's error inside it: its
type names what happened (`AccessDenied`, a cancellation), as it would for a `kernos.Agent`.
An error the agent's own code raised is left as it is, whatever it was raised from.
"""

from __future__ import annotations

import asyncio

from temporalio.exceptions import FailureError

from kernos.kernel.errors import KernosError

#: Where an error response carries the kernel's error (`httpx.Response.extensions`).
KERNEL_ERROR = "kernos_error"
#: The packages whose errors wrap others': their own, never the agent's.
FRAMEWORKS = (
    "agents", "openai", "langchain", "langchain_core", "langchain_openai", "langgraph",
    "langsmith", "pydantic_ai",
)  # fmt: skip


def _framework(exc: BaseException) -> bool:
    return type(exc).__module__.partition(".")[0] in FRAMEWORKS


def kernel_cause(exc: BaseException) -> BaseException:
    """The kernel's error (or Temporal's failure, or a cancellation) wrapped in `exc`.

    `exc` itself when it is not a framework's error or wraps none.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KernosError | FailureError | asyncio.CancelledError):
            return current
        if not _framework(current):
            break
        extensions = getattr(getattr(current, "response", None), "extensions", None)
        carried = extensions.get(KERNEL_ERROR) if isinstance(extensions, dict) else None
        if isinstance(carried, BaseException):
            return carried
        current = current.__cause__ or current.__context__
    return exc
