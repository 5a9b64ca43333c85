"""Errors are translated once, here, at the activity edge."""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from kernos.kernel.errors import KernosError, LLMError


def to_application_error(exc: KernosError) -> ApplicationError:
    """A Temporal failure that keeps the error's type name, retryability and delay."""
    delay = None
    if isinstance(exc, LLMError) and exc.retry_after_s is not None:
        delay = timedelta(seconds=exc.retry_after_s)
    return ApplicationError(
        str(exc),
        type=type(exc).__name__,
        non_retryable=not exc.retryable,
        next_retry_delay=delay,
    )
