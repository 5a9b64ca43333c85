"""Tracing: OpenTelemetry spans for every run and syscall, across client, workflow and activity.

Temporal's OpenTelemetry plugin links the client's StartWorkflow, the agent worker's workflow
and activity scheduling, and the kernel worker's activity through Temporal headers (the only
thing headers carry); the LLM syscall adds a span in the GenAI semantic conventions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
from temporalio.plugin import SimplePlugin

from kernos.kernel.config import TelemetrySettings

TRACER = "kernos"


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object a line (several processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append `spans`."""
        lines = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(lines)  # one write: O_APPEND keeps processes' lines whole
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A span as the spans file stores it."""
    context = span.get_span_context()
    assert context is not None
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "service": span.resource.attributes.get("kernos.component")
        or span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


_configured = False


def configure(settings: TelemetrySettings, component: str) -> list[SimplePlugin]:
    """Install this process's tracer provider; return the Temporal plugins to connect with."""
    global _configured
    if not settings.enabled:
        return []
    if not _configured:
        provider = create_tracer_provider(
            resource=Resource.create(
                {"service.name": settings.service_name, "kernos.component": component}
            )
        )
        if settings.spans_file is not None:
            provider.add_span_processor(
                SimpleSpanProcessor(JsonLinesSpanExporter(settings.spans_file))
            )
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
            )
        trace.set_tracer_provider(provider)
        _configured = True
    return [OpenTelemetryPlugin(add_temporal_spans=True)]


def flush() -> None:
    """Export what is buffered (before a command exits)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush()


def read_spans(path: Path) -> Iterator[dict[str, Any]]:
    """Every span in a spans file."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def run_spans(path: Path, run_id: str) -> list[dict[str, Any]]:
    """The spans of every trace that touches `run_id`."""
    spans = list(read_spans(path))
    traces = {
        span["trace_id"]
        for span in spans
        if run_id
        in (span["attributes"].get("temporalWorkflowID"), span["attributes"].get("kernos.run_id"))
    }
    return [span for span in spans if span["trace_id"] in traces]


def render_tree(spans: list[dict[str, Any]]) -> list[str]:
    """Spans as an indented tree, children in start order, with durations and key attributes."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {span["span_id"] for span in spans}
    for span in sorted(spans, key=lambda s: s["start_ns"]):
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    shown = ("gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
             "kernos.decision")  # fmt: skip
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            ms = ((span["end_ns"] or span["start_ns"]) - span["start_ns"]) / 1e6
            extra = " ".join(
                f"{k}={span['attributes'][k]}" for k in shown if k in span["attributes"]
            )
            lines.append(
                f"{'  ' * depth}{span['name']}  {ms:.1f} ms  [{span['service']}] {extra}".rstrip()
            )
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return lines
