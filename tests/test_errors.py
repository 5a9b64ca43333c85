"""Kernel errors keep what they hold on the way from a kernel worker into agent code.

Each error is raised where the kernel raises it (an activity), turned into Temporal's failure
at the activity edge, encoded and decoded as the server carries it, and rebuilt in the run as
agent code catches it; on the way, with a kernel worker's seal and without one.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError

from kernos.activities.failures import to_application_error
from kernos.kernel import errors
from kernos.kernel.llm.http import ServerUnreachable, error_for_status
from kernos.kernel.result_seal import error_message, new_signing_key, sign, signing_key
from kernos.workflows.dispatcher import _translate

KEY = signing_key(new_signing_key())
CONVERTER = pydantic_data_converter


def carried(exc: errors.KernosError, sealed: bool) -> errors.KernosError | None:
    """`exc` as agent code would catch it, having crossed from a kernel worker."""

    def seal(kind: str, message: str, fields: Any) -> str:
        return sign(KEY, error_message(("wf", "run"), "storage.write", None, kind, message, fields))

    failure = Failure()
    application = to_application_error(exc, seal if sealed else None)
    CONVERTER.failure_converter.to_failure(application, CONVERTER.payload_converter, failure)
    decoded = CONVERTER.failure_converter.from_failure(failure, CONVERTER.payload_converter)
    assert isinstance(decoded, ApplicationError)
    activity_error = ActivityError(
        "activity error", scheduled_event_id=1, started_event_id=2, identity="kernel",
        activity_type="storage.write", activity_id="1", retry_state=None,
    )  # fmt: skip
    activity_error.__cause__ = decoded
    return _translate(activity_error)


ERRORS = [
    errors.PayloadTooLarge("the file 'a.md'", 60_000, 50_000, "[storage] max_file_bytes"),
    errors.LLMRateLimited("llama answered 429: busy", retry_after_s=2.5),
    errors.LLMBadRequest("llama answered 400: bad"),
    errors.UnknownTool("grep", ["search", "fetch"]),
]


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
@pytest.mark.parametrize("exc", ERRORS, ids=lambda exc: type(exc).__name__)
def test_an_error_keeps_its_type_message_and_fields(exc: errors.KernosError, sealed: bool) -> None:
    caught = carried(exc, sealed)
    assert type(caught) is type(exc)
    assert str(caught) == str(exc)
    assert caught.field_values() == exc.field_values()
    assert exc.field_values(), "each case holds a field"


def test_a_kernel_subclass_crosses_as_its_public_class_with_its_fields_only() -> None:
    # The instance's own subclass, and anything it holds beyond the public fields, stay behind.
    down = ServerUnreachable("cannot reach llama: refused", retry_after_s=1.0)
    down.connection = "socket 7"  # type: ignore[attr-defined]
    caught = carried(down, sealed=True)
    assert type(caught) is errors.LLMUnavailable
    assert caught.retry_after_s == 1.0
    assert not hasattr(caught, "connection")


def test_one_hierarchy_a_caller_catches_by_kind() -> None:
    assert issubclass(errors.RunNotFound, errors.NotFound)
    assert issubclass(errors.NotFound, LookupError)
    with pytest.raises(errors.NotFound) as caught:
        raise errors.RunNotFound("run-1")
    assert caught.value.field_values() == {"run_id": "run-1"}


@pytest.mark.parametrize(("header", "expected"), [("2.5", 2.5), ("1e300", 3600.0), ("inf", None)])
def test_a_servers_retry_after_is_kept_within_bounds(header: str, expected: float | None) -> None:
    # ("inf" or "1e300" overflowed the retry's timedelta at the activity edge.)
    response = httpx.Response(429, headers={"retry-after": header}, json={"error": "busy"})
    error = error_for_status("llama", response)
    assert isinstance(error, errors.LLMRateLimited)
    assert error.retry_after_s == expected
    assert to_application_error(error).type == "LLMRateLimited"


def test_an_error_without_fields_is_sealed_as_before_errors_had_them() -> None:
    # A pool's host of an earlier version verifies (type, message) alone.
    sealed: list[Any] = []

    def seal(kind: str, message: str, fields: Any) -> str:
        sealed.append(fields)
        return "seal"

    failure = to_application_error(errors.LLMUnavailable("llama answered 503"), seal)
    assert failure.details == ("seal",) and sealed == [{}]
