"""`llm.chat`: a generation on one LLM instance."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from temporalio import activity

from kernos.activities.heartbeat import heartbeating
from kernos.kernel.llm.base import LLMBackend, Snapshot
from kernos.kernel.syscalls import LLMRequest, LLMResponse
from kernos.kernel.telemetry import TRACER


def _last_snapshot() -> Snapshot | None:
    """What an interrupted earlier attempt of this activity had generated, from its heartbeat."""
    details = activity.info().heartbeat_details
    if not details or not isinstance(details[0], dict):
        return None
    snapshot = Snapshot.model_validate(details[0])
    return snapshot if snapshot.tokens else None


class LLMActivities:
    """The LLM syscalls of one instance; its worker polls the model's pool queue."""

    def __init__(self, backend: LLMBackend, provider: str = "openai") -> None:
        self.backend = backend
        self.provider = provider

    @activity.defn(name="llm.chat")
    async def chat(self, request: LLMRequest) -> LLMResponse:
        """Generate the next assistant message, heartbeating the partial text."""
        attributes: dict[str, str | int | float] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": request.model,
        }
        sampling = request.sampling
        if sampling.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = sampling.max_tokens
        if sampling.temperature is not None:
            attributes["gen_ai.request.temperature"] = sampling.temperature
        tracer = trace.get_tracer(TRACER)
        with tracer.start_as_current_span(
            f"chat {request.model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            resume = _last_snapshot()
            if resume is not None:
                span.set_attribute("kernos.resumed_tokens", len(resume.tokens))
            try:
                async with heartbeating() as beat:
                    response = await self.backend.chat(request, beat, resume)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise
            span.set_attributes(
                {
                    "gen_ai.response.model": response.model,
                    "gen_ai.usage.input_tokens": response.usage.input_tokens,
                    "gen_ai.usage.output_tokens": response.usage.output_tokens,
                }
            )
            if response.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
            return response
