"""The kernel's own error, found inside the errors an agent framework wrapped it in.

A framework reports what failed under it in its own types: the OpenAI Agents SDK wraps a tool's
error in `AgentsException`, LangChain a tool's in `ToolException`, and an OpenAI client an error
response in `APIStatusError` (where `kernos.adapters.openai_transport` leaves the kernel's error
on the response). A run that ends on such an error ends as the error inside it: the kernel's (its
type names what happened: `AccessDenied`, a cancellation), as it would for a `kernos.Agent`, or
the agent's own. An error the agent's own code raised is left as it is, whatever it was raised
from. The type is the agent's report (its code can raise any error); the audit is the kernel's.
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
    "langsmith", "pydantic_ai", "pydantic_graph",
)  # fmt: skip


def _framework(exc: BaseException) -> bool:
    return type(exc).__module__.partition(".")[0] in FRAMEWORKS


def kernel_cause(exc: BaseException) -> BaseException:
    """The error a run ends as when agent code raised `exc`.

    Through a framework's errors, to what they wrap: the kernel's error (or Temporal's failure,
    or a cancellation), or the agent's own error. `exc` itself when it is not a framework's, or
    wraps nothing but framework errors.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KernosError | FailureError | asyncio.CancelledError):
            return current
        if not _framework(current):
            return current
        extensions = getattr(getattr(current, "response", None), "extensions", None)
        carried = extensions.get(KERNEL_ERROR) if isinstance(extensions, dict) else None
        if isinstance(carried, BaseException):
            return carried
        # What it was raised from, or while handling unless that was suppressed (`from None`).
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return exc
