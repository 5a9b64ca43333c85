"""A run's spans, made by its pool's host: agent code neither makes nor carries trace context.

Temporal's OpenTelemetry plugin would make these inside the workflow, whose process is now the
confined child: it has no exporter, and whatever it put in a header would be agent code's.
So the host makes them, as the plugin names them: `RunWorkflow:AgentRun` under the client's
`StartWorkflow` (from the run's start header), and a `StartActivity:<syscall>` under it for
each syscall, whose context it writes into the activity's only header, `_tracer-data`, for the
kernel worker's `RunActivity` span. Replayed work makes no spans: they were made the first time;
a run that resumes on a host (after leaving its cache, or another host) parents its new
syscalls' spans on the run's start context, as the plugin does.
"""

from __future__ import annotations

from collections.abc import Mapping

import temporalio.api.common.v1
import temporalio.converter
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from temporalio.bridge.proto.workflow_commands import ScheduleActivity

#: The header Temporal's OpenTelemetry plugin carries trace context in.
HEADER = "_tracer-data"
_CONVERTER = temporalio.converter.PayloadConverter.default


class RunTrace:
    """The spans of one run on this host."""

    def __init__(
        self,
        headers: Mapping[str, temporalio.api.common.v1.Payload],
        workflow_type: str,
        *,
        resumed: bool = False,
    ) -> None:
        carrier: dict[str, str] = {}
        if HEADER in headers:
            try:
                decoded = _CONVERTER.from_payloads([headers[HEADER]])[0]
            except Exception:  # noqa: BLE001 - a malformed header starts a trace of its own
                decoded = None
            if isinstance(decoded, dict):
                carrier = {str(k): str(v) for k, v in decoded.items()}
        self._tracer = trace.get_tracer(__name__)
        self._parent = extract(carrier)
        self._span: trace.Span | None = None
        self._workflow_type = workflow_type
        self._resumed = resumed

    def begin(self) -> None:
        """The run's code runs here: its workflow span starts, unless it ran before (resumed).

        Not at the trace's making: a task turned back before its code runs would make the span
        again at its next attempt.
        """
        if not self._resumed and self._span is None:
            self._span = self._tracer.start_span(
                f"RunWorkflow:{self._workflow_type}",
                context=self._parent,
                kind=trace.SpanKind.SERVER,
            )
            self._parent = trace.set_span_in_context(self._span)

    def activity(self, command: ScheduleActivity) -> None:
        """Record the syscall's scheduling; its header is the span's context, and only that."""
        parent = self._parent
        span = self._tracer.start_span(
            f"StartActivity:{command.activity_type}", context=parent, kind=trace.SpanKind.CLIENT
        )
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span, otel_context.Context()))
        span.end()
        command.headers.clear()
        if carrier:
            command.headers[HEADER].CopyFrom(_CONVERTER.to_payloads([carrier])[0])

    def end(self) -> None:
        """The run ended, or left this host's cache."""
        if self._span is not None:
            self._span.end()
