"""The LLM syscalls of one instance.

`llm.chat`; `llm.continue`, the next round-robin slice of a suspended generation; and
`llm.compact`, a conversation's older turns summarised in their place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from temporalio import activity

from kernos.activities.context import ContextWindow, activity_key
from kernos.activities.heartbeat import heartbeating, last_heartbeat
from kernos.activities.interceptor import admitted, caller
from kernos.activities.token_stream import TokenStream
from kernos.kernel.config import SchedulerSettings
from kernos.kernel.errors import ContextTooLong, InvalidRequest, KernosError
from kernos.kernel.generations import GenerationStore
from kernos.kernel.llm.base import SLICE_END, LLMBackend, Placement, Snapshot
from kernos.kernel.llm.http import ServerUnreachable
from kernos.kernel.run_events import RunEventLog
from kernos.kernel.syscall_table import LLM_CHAT, LLM_COMPACT, LLM_CONTINUE
from kernos.kernel.syscalls import (
    Compaction,
    CompactRequest,
    LLMContinuation,
    LLMRequest,
    LLMResponse,
    TokenUsage,
    ToolSpec,
)
from kernos.kernel.telemetry import TRACER
from kernos.kernel.tools import calling


def _last_snapshot() -> Snapshot | None:
    """What an interrupted earlier attempt had generated, from its (signed) heartbeat."""
    details = last_heartbeat()
    if not isinstance(details, dict):
        return None
    snapshot = Snapshot.model_validate(details)
    return snapshot if snapshot.length else None


class LLMActivities:
    """The LLM syscalls of one instance; its worker polls the model's pool queue.

    How a generation is placed on the server comes from the kernel's record of the run, not
    from the workflow: its policy (a time slice under `rr`, and `fair` in tokens) and its
    priority.
    """

    def __init__(
        self,
        backend: LLMBackend,
        generations: GenerationStore,
        scheduler: SchedulerSettings,
        context: ContextWindow,
        provider: str = "openai",
        instance: str | None = None,
        on_unreachable: Callable[[], None] = lambda: None,
        tools: Mapping[str, ToolSpec] | None = None,
        native_tools: bool = False,
        events: RunEventLog | None = None,
        token_interval_s: float = 0.0,
    ) -> None:
        self.backend = backend
        self.generations = generations
        self.scheduler = scheduler
        self.context = context
        self.instance = instance
        #: Told when the server cannot be reached, so the instance stops taking work.
        self.on_unreachable = on_unreachable
        self.provider = provider
        #: The kernel's registered tools, whose schemas a request with `tools` gets.
        self.tools = dict(tools or {})
        #: The server calls tools itself (OpenAI's `tools`), rather than under the kernel's schema.
        self.native_tools = native_tools
        #: Where a generation's text goes as it grows (`llm.delta`), every `token_interval_s`.
        self.events = events if token_interval_s > 0 else None
        self.token_interval_s = token_interval_s

    def _placement(self) -> Placement:
        """Where the server puts this attempt: its request id, the run's priority and slice."""
        record = admitted()
        policy = record.scheduling.policy
        info = activity.info()
        return Placement(
            request_id=f"{activity_key()}/{info.attempt}".replace("/", "-"),
            priority=record.priority if policy in ("priority", "fair") else None,
            slice_tokens=self.scheduler.slice_tokens if self.scheduler.slices(policy) else None,
        )

    @activity.defn(name=LLM_CHAT.name)
    async def chat(self, request: LLMRequest) -> LLMResponse:
        """Generate the next assistant message, heartbeating the partial output."""
        run_id = caller().run_id
        key = activity_key()
        context = await self.context.resolve(request, run_id, key)
        try:
            resolved = calling.offer(context, self.tools, native=self.native_tools)
        except KernosError:
            raise  # UnknownTool and the like: already the kernel's, with their fields
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            # Tools of the agent's own that the kernel cannot describe: the run's error to
            # handle, never an attempt to retry.
            raise InvalidRequest(f"the request's tools cannot be offered: {exc}") from None
        try:
            response, snapshot = await self._generate(resolved, _last_snapshot(), run_id, key)
        except ContextTooLong:
            if request.conversation is None:
                raise
            raise await self.context.too_long(request, resolved) from None
        if response.finish_reason != SLICE_END:
            concluded = await self.context.conclude(resolved, response, run_id, key)
            return calling.parse(resolved, concluded, key)
        await self.generations.save(
            key, run_id, resolved, snapshot, charged_before=0, written_by=key
        )
        return response.model_copy(update={"continuation": key})

    @activity.defn(name=LLM_CONTINUE.name)
    async def continue_(self, continuation: LLMContinuation) -> LLMResponse:
        """Continue a generation suspended at the end of its slice, for one more slice."""
        run_id = caller().run_id
        key = activity_key()
        suspended = await self.generations.load(continuation.generation, run_id)
        if suspended.finished and suspended.written_by != key:
            raise InvalidRequest(f"generation {continuation.generation!r} has already ended")
        if suspended.request.model != continuation.model:
            # The decision was on the model this instance serves; generate with no other.
            raise InvalidRequest(
                f"generation {continuation.generation!r} is of model "
                f"{suspended.request.model!r}, not {continuation.model!r}"
            )
        stored = suspended.snapshot
        beat = _last_snapshot()
        resume = beat if beat is not None and beat.length > stored.length else stored
        charged = suspended.charged_for(key)
        response, snapshot = await self._generate(
            suspended.request, resume, run_id, continuation.generation
        )
        # Earlier slices were charged for their tokens, and this one's prompt is mostly cached.
        usage = TokenUsage(
            input_tokens=response.usage.input_tokens,
            output_tokens=max(0, response.usage.output_tokens - charged),
            cached_input_tokens=response.usage.cached_input_tokens,
        )
        sliced = response.finish_reason == SLICE_END
        await self.generations.save(
            continuation.generation,
            run_id,
            suspended.request,
            snapshot,
            charged_before=charged,
            written_by=key,
            finished=not sliced,
        )
        if not sliced:
            # The reply goes into the conversation as the first slice's, whichever slice ends it.
            response = await self.context.conclude(
                suspended.request, response, run_id, continuation.generation
            )
            response = calling.parse(suspended.request, response, continuation.generation)
        update: dict[str, object] = {"usage": usage, "resumed_from": stored.length}
        if sliced:
            # The history takes this slice's text only; the whole text comes once, at the end.
            update |= {
                "text": snapshot.text[len(stored.text) :],
                "continuation": continuation.generation,
            }
        return response.model_copy(update=update)

    @activity.defn(name=LLM_COMPACT.name)
    async def compact(self, request: CompactRequest) -> Compaction:
        """Summarise a conversation's older turns in their place (the context manager's rule)."""
        async with heartbeating() as beat:
            return await self.context.compact(request, caller().run_id, activity_key(), beat)

    async def _generate(
        self, request: LLMRequest, resume: Snapshot | None, run_id: str, generation: str
    ) -> tuple[LLMResponse, Snapshot]:
        """Generate on the backend, heartbeating and streaming the text as it grows."""
        stream = (
            None
            if self.events is None
            else TokenStream(
                self.events, run_id, generation, request.model,
                resume.text if resume is not None else "", self.token_interval_s,
            )
        )  # fmt: skip
        tracer = trace.get_tracer(TRACER)
        with tracer.start_as_current_span(
            f"chat {request.model}", kind=SpanKind.CLIENT, attributes=self._attributes(request)
        ) as span:
            if resume is not None:
                span.set_attribute("kernos.resumed_tokens", resume.length)
            placement = self._placement()
            last = resume.model_copy(deep=True) if resume is not None else Snapshot()
            try:
                async with heartbeating() as beat:

                    def progress(snapshot: Snapshot) -> None:
                        nonlocal last
                        last = snapshot
                        beat(snapshot)
                        if stream is not None:
                            stream.note(snapshot.text)

                    response = await self.backend.chat(request, progress, resume, placement)
            except BaseException as exc:  # a cancelled attempt's too: its stream stops
                if stream is not None:
                    stream.abandon()
                span.set_attribute("error.type", type(exc).__name__)
                if isinstance(exc, ServerUnreachable):
                    self.on_unreachable()
                raise
            if stream is not None:
                await stream.finish(response.text)
            _record_response(span, response)
            response = response.model_copy(update={"instance": self.instance})
            return response, last.model_copy(update={"text": response.text})

    def _attributes(self, request: LLMRequest) -> dict[str, str | int | float]:
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
        return attributes


def _record_response(span: Span, response: LLMResponse) -> None:
    span.set_attributes(
        {
            "gen_ai.response.model": response.model,
            "gen_ai.usage.input_tokens": response.usage.input_tokens,
            "gen_ai.usage.output_tokens": response.usage.output_tokens,
        }
    )
    if response.finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
