"""The kernel's error hierarchy: every error names the bad value and what would be valid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from pydantic import ValidationError


def first_problem(exc: ValidationError) -> str:
    """The first thing pydantic found wrong, as `where: what` (just `what` at the top level)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def carried_fields(kind: str) -> tuple[str, ...]:
    """The fields an error of public type name `kind` carries into agent code (or none)."""
    cls = globals().get(kind)
    return cls.fields if isinstance(cls, type) and issubclass(cls, KernosError) else ()


class KernosWarning(UserWarning):
    """A warning raised by kernos itself (tests turn these into errors)."""


class KernosError(Exception):
    """Root of every error that kernos raises on purpose."""

    #: Whether retrying the same request can succeed; read at the activity edge.
    retryable: bool = False
    #: The attributes it holds besides its message (JSON values), which travel with it from a
    #: kernel worker into agent code.
    fields: ClassVar[tuple[str, ...]] = ()

    def field_values(self) -> dict[str, Any]:
        """Its `fields`, by name, as it holds them."""
        return {name: getattr(self, name, None) for name in self.fields}

    @classmethod
    def rebuilt(cls, message: str, values: Mapping[str, Any]) -> Self:
        """The error that `message` and its fields' `values` describe.

        Built around the message: some errors' constructors take the parts of it instead.
        """
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        for name in cls.fields:
            setattr(error, name, values.get(name))
        return error


class InvalidRequest(KernosError, ValueError):
    """A request that can never succeed as written: fix the input."""


class InvalidRunSpec(InvalidRequest):
    """A run specification that fails validation (empty task, bad priority, bad names)."""


class UnknownAgent(InvalidRequest):
    """An agent name that no worker registers."""

    fields = ("name", "registered")

    def __init__(self, name: str, registered: list[str]) -> None:
        self.name = name
        self.registered = sorted(registered)
        listed = ", ".join(self.registered) or "none"
        super().__init__(f"unknown agent {name!r}; registered agents: {listed}")


class UnknownModel(InvalidRequest):
    """A model that no configured LLM instance serves."""

    fields = ("model", "known")

    def __init__(self, model: str, known: list[str]) -> None:
        self.model = model
        self.known = sorted(known)
        listed = ", ".join(self.known) or "none"
        super().__init__(f"unknown model {model!r}; configured models: {listed}")


class PayloadTooLarge(InvalidRequest):
    """A payload over a named size limit."""

    fields = ("size", "limit")

    def __init__(self, what: str, size: int, limit: int, setting: str) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes ({setting})")


class AccessDenied(KernosError, PermissionError):
    """The access manager refused a syscall; the refusal is in the audit log."""


class AffinityLost(AccessDenied):
    """A call waited on an LLM instance's own queue, but the instance does not hold its run.

    The dispatcher sends it to the model's pool; agent code sees it only from a call it
    scheduled itself.
    """


class UnsealedResult(AccessDenied):
    """A syscall's result or error that no kernel worker sealed: refused, its content unread.

    Another poller of the syscall's task queue completed it (or the agent worker's
    `[temporal] result_check_key` is not the public half of the kernel workers' signing key).
    """


class ApprovalRequired(KernosError):
    """A syscall that policy lets through only with a human's approval, not given yet.

    The run waits for the decision (`kernos approve`); agent code sees it only if the wait ends
    without one.
    """


class TokenBudgetExceeded(AccessDenied):
    """The tenant has used its token budget; LLM syscalls are refused until it is raised."""


class ConfigError(KernosError):
    """Settings that cannot work (a missing DSN, a malformed file)."""


class PolicyError(ConfigError):
    """A malformed Casbin model or policy file; the message names the file and line."""


class NotFound(InvalidRequest, LookupError):
    """A run, memory item, file, approval or key the caller's scope does not hold (or see)."""


class RunNotFound(NotFound):
    """A run id that the kernel has no record of (or that the caller may not see)."""

    fields = ("run_id",)

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")


class InvalidPath(InvalidRequest):
    """A storage path outside the rules: relative, confined to the namespace, printable."""


class VersionConflict(InvalidRequest):
    """A write that expected a file's version another writer has moved on from."""


class UnknownTool(InvalidRequest):
    """A tool name that the kernel does not register."""

    fields = ("name", "registered")

    def __init__(self, name: str, registered: list[str]) -> None:
        self.name = name
        self.registered = sorted(registered)
        listed = ", ".join(sorted(registered)) or "none"
        super().__init__(f"unknown tool {name!r}; registered tools: {listed}")


class MCPToolError(KernosError):
    """An MCP server's answer that its tool failed (its text is the model's to read)."""


class ToolOutcomeUnknown(KernosError):
    """An irreversible tool whose earlier attempt may have acted: the kernel will not repeat it."""


class EmbeddingMismatch(ConfigError):
    """An embedding model whose vectors do not fit the store's dimension."""

    fields = ("dimensions", "expected")

    def __init__(self, model: str, dimensions: int, expected: int) -> None:
        self.dimensions = dimensions
        self.expected = expected
        super().__init__(
            f"the embedding model {model!r} gives {dimensions}-dimensional vectors and the "
            f"memory store holds {expected}-dimensional ones: configure a {expected}-dimensional "
            "model, or migrate the store's vector column"
        )


class RateLimited(KernosError):
    """An API key past its limit of requests or of running runs (`[gateway]`).

    Nothing was done: the same request may succeed after `retry_after_s`.
    """

    fields = ("retry_after_s",)

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class LLMError(KernosError):
    """A failure of an LLM server, translated at the activity edge."""

    retryable = True
    fields = ("retry_after_s",)

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class LLMBadRequest(LLMError):
    """The server rejected the request (4xx): retrying the same request cannot help."""

    retryable = False


class ContextTooLong(LLMBadRequest):
    """The prompt and requested output do not fit the model's context window."""


class LLMRateLimited(LLMError):
    """The server is overloaded (429); retry after its delay."""


class LLMUnavailable(LLMError):
    """The server is unreachable, timed out or failed (5xx); Temporal retries."""


class ScriptExhausted(LLMBadRequest):
    """The scripted backend was asked for more replies than its script holds."""
