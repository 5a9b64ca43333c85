"""Errors are translated once, here, at the activity edge."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio.exceptions import ApplicationError

from kernos.kernel.errors import KernosError, LLMError

#: Seals an error's type name and message for the syscall being answered.
Sealer = Callable[[str, str], str]


def public_type(exc: KernosError) -> str:
    """The name of the error's nearest class in the public hierarchy (kernos.kernel.errors)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == KernosError.__module__:
            return cls.__name__
    return KernosError.__name__


def to_application_error(exc: KernosError, seal: Sealer | None = None) -> ApplicationError:
    """A Temporal failure that keeps the error's public type name, retryability and delay.

    With a `seal`, the failure carries the kernel worker's seal of its type and message (its
    only detail), which the workflow side checks.
    """
    delay = None
    if isinstance(exc, LLMError) and exc.retry_after_s is not None:
        delay = timedelta(seconds=exc.retry_after_s)
    kind, message = public_type(exc), str(exc)
    return ApplicationError(
        message,
        *([seal(kind, message)] if seal is not None else []),
        type=kind,
        non_retryable=not exc.retryable,
        next_retry_delay=delay,
    )


def sealed_failure(exc: Exception, seal: Sealer) -> ApplicationError:
    """Any other error an activity raised, as the failure Temporal would make of it, sealed."""
    if isinstance(exc, ApplicationError):
        kind = exc.type or type(exc).__name__
        return ApplicationError(
            exc.message, *exc.details, seal(kind, exc.message), type=kind,
            non_retryable=exc.non_retryable, next_retry_delay=exc.next_retry_delay,
        )  # fmt: skip
    kind, message = type(exc).__name__, str(exc)
    return ApplicationError(message, seal(kind, message), type=kind)
