"""Errors are translated once, here, at the activity edge."""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from kernos.kernel.errors import KernosError, LLMError


def public_type(exc: KernosError) -> str:
    """The name of the error's nearest class in the public hierarchy (kernos.kernel.errors)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == KernosError.__module__:
            return cls.__name__
    return KernosError.__name__


def to_application_error(exc: KernosError) -> ApplicationError:
    """A Temporal failure that keeps the error's public type name, retryability and delay."""
    delay = None
    if isinstance(exc, LLMError) and exc.retry_after_s is not None:
        delay = timedelta(seconds=exc.retry_after_s)
    return ApplicationError(
        str(exc),
        type=public_type(exc),
        non_retryable=not exc.retryable,
        next_retry_delay=delay,
    )
