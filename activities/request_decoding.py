"""How kernel workers read a syscall's request: one that does not validate is named, not failed.

Temporal's worker decodes an activity's arguments before any interceptor runs, and turns a
decoding error into a retryable failure: with a syscall's unbounded retries, a request that
agent code built around its own validation (pydantic's `model_construct`) would be retried for
the rest of the run, never audited. Read through this converter, such a request arrives as
`Undecodable`, which the interceptor refuses like any input of the wrong kind: denied,
audited, not retried.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

from kernos.kernel.errors import first_problem
from kernos.kernel.syscalls import SyscallRequest


class Undecodable:
    """A syscall request that did not validate, and why."""

    def __init__(self, request: type[SyscallRequest], problem: str) -> None:
        self.request = request
        self.problem = problem


class _NamedWhenInvalid(PydanticJSONPlainPayloadConverter):
    """Pydantic's JSON converter; a syscall request that does not validate is `Undecodable`."""

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        try:
            return super().from_payload(payload, type_hint)
        except ValidationError as exc:
            if isinstance(type_hint, type) and issubclass(type_hint, SyscallRequest):
                return Undecodable(type_hint, first_problem(exc))
            raise


class KernelPayloadConverter(CompositePayloadConverter):
    """Temporal's default converters, JSON read by `_NamedWhenInvalid`."""

    def __init__(self) -> None:
        named = _NamedWhenInvalid()
        super().__init__(
            *(
                named if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


#: The kernel workers' data converter: pydantic's, syscall requests read as above.
KERNEL_CONVERTER = DataConverter(payload_converter_class=KernelPayloadConverter)
