"""Errors are translated once, here, at the activity edge."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

from kernos.kernel.errors import KernosError, LLMError

#: Seals an error's type name, message and fields for the syscall being answered.
Sealer = Callable[[str, str, Mapping[str, Any]], str]


def public_class(exc: KernosError) -> type[KernosError]:
    """The error's nearest class in the public hierarchy (kernos.kernel.errors)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == KernosError.__module__ and issubclass(cls, KernosError):
            return cls
    return KernosError


def public_type(exc: KernosError) -> str:
    """The name of the error's nearest class in the public hierarchy."""
    return public_class(exc).__name__


def to_application_error(exc: KernosError, seal: Sealer | None = None) -> ApplicationError:
    """A Temporal failure that keeps the error's public type name, fields, retryability, delay.

    Its details: the fields of its public class (`KernosError.fields`) as one object, where it
    has any; then, with a `seal`, the kernel worker's seal of its type, message and fields,
    which the workflow side checks.
    """
    delay = None
    if isinstance(exc, LLMError) and exc.retry_after_s is not None:
        delay = timedelta(seconds=exc.retry_after_s)
    public = public_class(exc)
    kind, message = public.__name__, str(exc)
    # The public class's fields only (a kernel subclass may hold more: a caller's record), and
    # those it has: an error without any is sealed as before errors carried fields, which a
    # pool's host of an earlier version still verifies.
    fields = {
        name: value for name in public.fields if (value := getattr(exc, name, None)) is not None
    }
    details: list[Any] = [fields] if fields else []
    if seal is not None:
        details.append(seal(kind, message, fields))
    return ApplicationError(
        message, *details, type=kind, non_retryable=not exc.retryable, next_retry_delay=delay
    )


def sealed_failure(exc: Exception, seal: Sealer) -> ApplicationError:
    """Any other error an activity raised, as the failure Temporal would make of it, sealed.

    Its own details are left out: the seal does not cover them, so the run could not trust them
    (and a first detail would read as a kernel error's fields).
    """
    if isinstance(exc, ApplicationError):
        kind = exc.type or type(exc).__name__
        return ApplicationError(
            exc.message, seal(kind, exc.message, {}), type=kind,
            non_retryable=exc.non_retryable, next_retry_delay=exc.next_retry_delay,
        )  # fmt: skip
    kind, message = type(exc).__name__, str(exc)
    return ApplicationError(message, seal(kind, message, {}), type=kind)
