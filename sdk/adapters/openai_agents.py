"""The OpenAI Agents SDK on kernos: an `agents.Agent` run as a governed, durable kernos run.

Register the SDK's own object by path, in settings (`[agents] triage = "my_app.agents:triage"`,
where `triage` is an `agents.Agent`; its module need not import kernos), or in code with
`wrap(agent)`. Inside the run the SDK's `Runner.run` drives the agent as it always does; each
agent's model is replaced by `KernosModel`, so every model call is an `llm.chat` syscall of the
run (decided, audited, scheduled, resumed after a crash), and the tools that `tools(...)`
returns are `tool.call` syscalls of tools registered with the kernel (decided, ledgered,
once-only when irreversible).

The run's messages cross in the SDK's own chat format (`Converter.items_to_messages`), and the
model's answer comes back as the SDK's output items (`Converter.message_to_output_items`), so
what the SDK makes of them (tool calls, the final output, `output_type`) is its own logic.

The agent's own function tools (`@function_tool`) and its handoffs stay the agent's: the model
is told of them beside the kernel's tools (`LLMRequest.agent_tools`) and the SDK answers their
calls inside the run, where code can compute but not reach anything; a tool that tries fails
the run with an error naming it. Refused by name when the agent is loaded (nothing starts):
hosted tools (they need OpenAI's servers), synchronous function tools (the SDK runs them in a
thread, which a run does not have), agents used as tools, `model_settings.retry`, names no
model can call, MCP servers set on the agent, an SDK other than the one supported.

A tool's `needs_approval` is a kernos approval: each call the SDK holds for one is an
`approval.ask` syscall, a durable wait (`awaiting-approval`) decided with `kernos approve`,
audited; a denial reaches the model as the SDK's rejection (`decided`).

Once loaded, this adapter is the SDK's default runner in the pool's process: inside a kernos
run, `Runner.run` and `Runner.run_streamed` run the governed agent, whether the run was
registered as an `agents.Agent` or is a `kernos.Agent` whose code calls the SDK itself (the
registry loads the adapter for any agent module that imported the SDK). A streamed run's events
come from each model answer whole: the kernel streams the generation, a run sees it complete.

The SDK's tracing is switched off: it exports to OpenAI's platform from a thread of its own,
which a confined pool cannot reach; the kernel's own tracing and audit cover the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar, Literal

import httpx
import pydantic_core
from agents import (
    Agent as SDKAgent,
)
from agents import (
    FunctionTool,
    Handoff,
    Model,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    RunConfig,
    RunContextWrapper,
    RunResult,
    RunResultStreaming,
    RunState,
    Tool,
    ToolApprovalItem,
    Usage,
    set_trace_provider,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.models.chatcmpl_converter import Converter
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.run import AgentRunner, RunOptions, set_default_agent_runner
from agents.tool import resolve_function_tool_failure_error_function
from agents.tool_context import ToolContext
from agents.tracing import setup as tracing_setup
from agents.tracing.provider import DefaultTraceProvider
from agents.version import __version__ as agents_version
from openai import APIConnectionError
from openai.types.chat import ChatCompletionMessage, ChatCompletionMessageFunctionToolCall
from openai.types.chat.chat_completion_message_function_tool_call import Function
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from pydantic import ValidationError
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError
from typing_extensions import Unpack

from kernos.adapters.kernel_tools import called, current_run
from kernos.agent import Agent
from kernos.kernel.errors import AccessDenied, ConfigError, InvalidRequest
from kernos.kernel.syscall_table import APPROVAL_ASK
from kernos.kernel.syscalls import (
    ApprovalAsk,
    JSONSchemaFormat,
    LLMRequest,
    LLMResponse,
    Message,
    Sampling,
    ToolCall,
    ToolCallRequest,
    ToolSpec,
)
from kernos.kernel.syscalls.llm_calls import TOOL_NAME
from kernos.workflows.dispatcher import CURRENT

#: The SDK versions this adapter is written and tested against (its seams change between them).
SUPPORTED = "0.22"
#: How the SDK marks a function tool made of a synchronous function (run in a thread).
_SYNC_MARKER = "__agents_sync_function_tool__"
#: Errors of a client that could not reach its server (a confined pool has no network).
_UNREACHABLE = (httpx.TransportError, APIConnectionError)
#: What kernos's JSON-schema formats may be named.
_FORMAT_NAME = re.compile(r"[^A-Za-z0-9_-]")


class KernosTool(FunctionTool):
    """A tool registered with the kernel, offered to the SDK's agent: each call is `tool.call`.

    Its schema is the kernel's (the model is told it by the kernel), so the one here accepts any
    object; the kernel validates the arguments and tells the model what was wrong.
    """


def tools(*names: str) -> list[Tool]:
    """The kernel's registered tools `names`, as tools for an `agents.Agent`."""
    return [_kernos_tool(name) for name in names]


def _kernos_tool(name: str) -> KernosTool:
    try:
        ToolCallRequest(name=name)
    except ValidationError as exc:
        raise ConfigError(f"{name!r} cannot name a kernos tool: {exc.errors()[0]['msg']}") from None

    async def call(context: ToolContext[Any], arguments: str) -> str:
        return await called(name, arguments or "{}", context.tool_call_id)

    return KernosTool(
        name=name,
        description=f"The kernel's tool {name!r}.",
        params_json_schema={"type": "object", "additionalProperties": True},
        on_invoke_tool=call,
        strict_json_schema=False,
    )


class KernosModel(Model):
    """The SDK's model seam: each call is an `llm.chat` syscall of the current run."""

    def __init__(self, model: str | None) -> None:
        #: The model's name as kernos's instances serve it; None: the run's default model.
        self.model = model

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> ModelResponse:
        """The model's answer to the run's messages, as the SDK's output items."""
        dispatcher = current_run()
        offered, own, choice = _offered(tools, handoffs, model_settings)
        request = LLMRequest(
            model=self.model or dispatcher.run.spec.model or "",
            messages=_messages(system_instructions, input),
            sampling=Sampling(
                temperature=model_settings.temperature,
                top_p=model_settings.top_p,
                max_tokens=model_settings.max_tokens,
            ),
            # kernos takes tools or a format, not both: with tools, the final answer is free.
            response_format=None if offered or own else _format(output_schema),
            tools=offered,
            agent_tools=own,
            tool_choice=choice,
        )
        return _model_response(await dispatcher.llm_chat(request))

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """The model's answer as the SDK's stream events, once the syscall has it whole.

        The kernel streams the generation (and resumes it after a crash); a run sees each
        answer complete, so each message's text is one delta.
        """
        answer = await self.get_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing
        )
        for event in _stream_events(answer):
            yield event


def _stream_events(answer: ModelResponse) -> list[TResponseStreamEvent]:
    """A whole answer as the SDK's stream events.

    Created; each item added, its text as one delta, done; completed with the items and usage.
    """
    started = Response(
        id=FAKE_RESPONSES_ID, created_at=0, model="kernos", object="response", output=[],
        tool_choice="auto", tools=[], parallel_tool_calls=False,
    )  # fmt: skip
    events: list[TResponseStreamEvent] = [
        ResponseCreatedEvent(type="response.created", response=started, sequence_number=0)
    ]
    for index, item in enumerate(answer.output):
        events.append(ResponseOutputItemAddedEvent(
            type="response.output_item.added", item=item, output_index=index,
            sequence_number=len(events),
        ))  # fmt: skip
        if isinstance(item, ResponseOutputMessage):
            for part, content in enumerate(item.content):
                if content.type == "output_text":
                    events.append(ResponseTextDeltaEvent(
                        type="response.output_text.delta", item_id=item.id,
                        output_index=index, content_index=part, delta=content.text,
                        logprobs=[], sequence_number=len(events),
                    ))  # fmt: skip
        events.append(ResponseOutputItemDoneEvent(
            type="response.output_item.done", item=item, output_index=index,
            sequence_number=len(events),
        ))  # fmt: skip
    usage = answer.usage
    completed = started.model_copy(update={
        "output": list(answer.output),
        "usage": ResponseUsage(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        ),
    })  # fmt: skip
    events.append(ResponseCompletedEvent(
        type="response.completed", response=completed, sequence_number=len(events)
    ))  # fmt: skip
    return events


def _text(content: Any) -> str:
    """A chat message's content as text: text parts only (kernos's messages are text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        kind = part.get("type")
        if kind not in ("text", "output_text", "input_text"):
            raise InvalidRequest(f"a message part of type {kind!r}: kernos's messages are text")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def _messages(system: str | None, input: str | list[TResponseInputItem]) -> list[Message]:
    """The SDK's input items as kernos's chat messages, the agent's instructions first."""
    messages = [Message(role="system", content=system)] if system else []
    for item in Converter.items_to_messages(input):
        chat: dict[str, Any] = dict(item)
        # An agent's own tool may answer with NUL, which a stored message cannot hold.
        role, content = chat["role"], _text(chat.get("content")).replace("\x00", "\ufffd")
        if role in ("system", "developer"):
            messages.append(Message(role="system", content=content))
        elif role == "user":
            messages.append(Message(role="user", content=content))
        elif role == "assistant":
            calls = [
                ToolCall(
                    id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"]
                )
                for c in chat.get("tool_calls") or []
            ]
            messages.append(Message(role="assistant", content=content, tool_calls=calls))
        elif role == "tool":
            messages.append(
                Message(role="tool", content=content, tool_call_id=chat["tool_call_id"])
            )
        else:
            raise InvalidRequest(
                f"a message of role {role!r}: kernos takes system, user, assistant and tool "
                "messages"
            )
    return messages


def _offered(
    tools: Iterable[Tool], handoffs: Iterable[Handoff[Any, Any]], settings: ModelSettings
) -> tuple[list[str], list[ToolSpec], Literal["auto", "required"]]:
    """The kernel's tools to offer the model, the agent's own, and whether it must call one."""
    kernel: list[str] = []
    own: list[ToolSpec] = []
    for tool in tools:
        if isinstance(tool, KernosTool):
            kernel.append(tool.name)
        elif isinstance(tool, FunctionTool):
            own.append(ToolSpec(name=tool.name, description=tool.description,
                                parameters=tool.params_json_schema))  # fmt: skip
        else:
            raise InvalidRequest(_hosted(tool))
    for handoff in handoffs:
        own.append(ToolSpec(name=handoff.tool_name, description=handoff.tool_description,
                            parameters=handoff.input_json_schema))  # fmt: skip
    choice = settings.tool_choice
    if choice == "none":
        return [], [], "auto"
    if choice in (None, "auto"):
        return kernel, own, "auto"
    if choice == "required":
        return kernel, own, "required"
    named = str(choice)
    if named not in [*kernel, *(spec.name for spec in own)]:
        raise InvalidRequest(f"tool_choice names {named!r}, which the agent does not have")
    return [n for n in kernel if n == named], [s for s in own if s.name == named], "required"


def _hosted(tool: Tool) -> str:
    return (
        f"tool {tool.name!r} is a hosted tool ({type(tool).__name__}), which needs OpenAI's "
        "servers: on kernos give the agent the kernel's tools, "
        "kernos.adapters.openai_agents.tools(...), or a function tool of its own"
    )


def _format(schema: AgentOutputSchemaBase | None) -> JSONSchemaFormat | None:
    """The agent's `output_type` as a JSON-schema format (None: plain text)."""
    if schema is None or schema.is_plain_text():
        return None
    name = _FORMAT_NAME.sub("_", schema.name())[:64] or "output"
    return JSONSchemaFormat(name=name, json_schema=schema.json_schema())


def _model_response(response: LLMResponse) -> ModelResponse:
    """The kernel's answer as the SDK's: output items and usage."""
    message = ChatCompletionMessage(
        role="assistant",
        content=response.text or None,
        tool_calls=[
            ChatCompletionMessageFunctionToolCall(
                id=call.id,
                type="function",
                function=Function(name=call.name, arguments=call.arguments),
            )
            for call in response.tool_calls
        ]
        or None,
    )
    usage = response.usage
    return ModelResponse(
        output=Converter.message_to_output_items(message),
        usage=Usage(
            requests=1,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        ),
        response_id=None,
    )


def check(agent: SDKAgent[Any], seen: set[int] | None = None) -> None:
    """ConfigError naming what kernos cannot run in `agent` or the agents it hands off to."""
    if not agents_version.startswith(f"{SUPPORTED}."):
        raise ConfigError(
            f"openai-agents {agents_version} is installed; kernos.adapters.openai_agents "
            f"supports {SUPPORTED}.x (pip install 'kernos[openai-agents]')"
        )
    seen = set() if seen is None else seen
    if id(agent) in seen:
        return
    seen.add(id(agent))
    if agent.model_settings.retry is not None:
        raise ConfigError(
            f"agent {agent.name!r}: model_settings.retry would retry model calls inside the "
            "run, with random delays a replay cannot repeat: kernos retries them (leave it unset)"
        )
    for tool in agent.tools:
        if not isinstance(tool, FunctionTool):
            raise ConfigError(f"agent {agent.name!r}: {_hosted(tool)}")
        if not TOOL_NAME.match(tool.name):
            raise ConfigError(
                f"agent {agent.name!r}: tool name {tool.name!r} is not one a model can call: "
                "1-64 letters, digits, '_' or '-', starting with a letter"
            )
        if tool._is_agent_tool:
            raise ConfigError(
                f"agent {agent.name!r}: tool {tool.name!r} is an agent run as a tool, whose "
                "own run kernos does not govern yet: hand off to that agent instead"
            )
        if isinstance(tool, KernosTool):
            continue
        if getattr(tool.on_invoke_tool, _SYNC_MARKER, False):
            raise ConfigError(
                f"agent {agent.name!r}: function tool {tool.name!r} is synchronous, and the "
                "SDK runs those in a thread, which a run does not have: make it `async def` "
                "(it runs in the run: it may compute, not do I/O)"
            )
    if agent.mcp_servers:
        raise ConfigError(
            f"agent {agent.name!r}: MCP servers on the agent are not supported on kernos yet; "
            "configure them in kernos ([[mcp]]) and give the agent their tools"
        )
    for handoff in agent.handoffs:
        if isinstance(handoff, SDKAgent):
            check(handoff, seen)
        elif not TOOL_NAME.match(handoff.tool_name):
            raise ConfigError(
                f"agent {agent.name!r}: handoff tool {handoff.tool_name!r} is not a name a "
                "model can call: give the handoff a tool_name_override"
            )


def _model_name(agent: SDKAgent[Any]) -> str | None:
    model = agent.model
    if model is None or isinstance(model, str):
        return model or None
    named = getattr(model, "model", None)  # the SDK's own models keep their name here
    return named if isinstance(named, str) else None


def _output(final: Any) -> str:
    """The agent's final output as the run's output: text, or JSON for a typed output."""
    if isinstance(final, str):
        return final
    return pydantic_core.to_json(final).decode()


class _NoTracing(DefaultTraceProvider):
    """The SDK's trace provider without its exporter, disabled.

    The SDK's default provider, made on first use, exports to OpenAI's platform over HTTP from
    a thread of its own: a confined pool cannot reach it, and making its client inside a run
    trips the workflow sandbox. This one is set before the SDK makes its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_disabled(True)


def _without_sdk_tracing() -> None:
    if not isinstance(tracing_setup.GLOBAL_TRACE_PROVIDER, _NoTracing):
        set_trace_provider(_NoTracing())


def _confined(tool: FunctionTool) -> FunctionTool:
    """The agent's function tool, failing the run by name if it reaches outside the run.

    The workflow sandbox refuses I/O, and a confined pool has no network: the tool's own
    failure policy would show the model an error it cannot act on, so the run fails instead.
    """
    failing_as = resolve_function_tool_failure_error_function(tool)

    def on_failure(context: RunContextWrapper[Any], error: Exception) -> Any:
        reached = isinstance(error, (RestrictedWorkflowAccessError, OSError, *_UNREACHABLE))
        if reached and not isinstance(error, TimeoutError):
            raise InvalidRequest(
                f"function tool {tool.name!r} reached outside the run ({error}): register "
                f"what does I/O with @kernos.tool and give the agent "
                f"kernos.adapters.openai_agents.tools({tool.name!r})"
            ) from None
        return failing_as(context, error) if failing_as is not None else None

    return dataclasses.replace(
        tool, _failure_error_function=on_failure, _use_default_failure_error_function=False
    )


Governed = dict[int, tuple[SDKAgent[Any], SDKAgent[Any]]]
"""Agents already governed, by their id: (the agent, its governed copy). The agent is kept, so
that its id is not reused by another while the entry lives."""


def _governed(agent: SDKAgent[Any], seen: Governed) -> SDKAgent[Any]:
    """`agent` with kernos's model, its own tools confined, and its handoffs governed too."""
    known = seen.get(id(agent))
    if known is not None and known[0] is agent:  # handoffs may go round in a circle
        return known[1]
    governed = dataclasses.replace(agent, model=KernosModel(_model_name(agent)))
    seen[id(agent)] = (agent, governed)
    governed.tools = [
        tool if isinstance(tool, KernosTool) or not isinstance(tool, FunctionTool)
        else _confined(tool)
        for tool in agent.tools
    ]  # fmt: skip
    handoffs: list[SDKAgent[Any] | Handoff[Any, Any]] = []
    for handoff in agent.handoffs:
        if isinstance(handoff, SDKAgent):
            handoffs.append(_governed(handoff, seen))
            continue
        invoke = handoff.on_invoke_handoff

        async def governed_invoke(
            context: RunContextWrapper[Any], arguments: str, invoke: Any = invoke
        ) -> SDKAgent[Any]:
            chosen = await invoke(context, arguments)
            check(chosen)
            # Made anew at each call, maybe: governed apart, never from the shared cache.
            return _governed(chosen, {})

        handoffs.append(dataclasses.replace(handoff, on_invoke_handoff=governed_invoke))
    governed.handoffs = handoffs
    return governed


def _governing(agent: SDKAgent[Any]) -> SDKAgent[Any]:
    """`agent` governed for the current run; one already governed as it is."""
    if isinstance(agent.model, KernosModel):
        return agent
    check(agent)
    return _governed(agent, {})


def _in_run(options: RunOptions[Any]) -> RunOptions[Any]:
    """The runner's options inside a kernos run, untraced.

    ConfigError for a run config that would take model calls around the kernel, or retry them
    inside the run.
    """
    config = options.get("run_config")
    if not isinstance(config, RunConfig):
        config = RunConfig(**(config or {}))
    if config.model is not None:
        raise ConfigError(
            "run_config.model would replace every agent's model, around the kernel: leave it "
            "unset (an agent's model names a model kernos serves)"
        )
    if config.model_settings is not None and config.model_settings.retry is not None:
        raise ConfigError(
            "run_config.model_settings.retry would retry model calls inside the run, with "
            "random delays a replay cannot repeat: kernos retries them (leave it unset)"
        )
    options["run_config"] = dataclasses.replace(
        config, tracing_disabled=True, trace_include_sensitive_data=False
    )
    return options


class GovernedRunner(AgentRunner):
    """The SDK's runner once this adapter is loaded.

    Inside a kernos run, `Runner.run` and `Runner.run_streamed` run the agent governed and
    untraced; outside one, as the SDK would.
    """

    async def run(
        self,
        starting_agent: SDKAgent[Any],
        input: str | list[TResponseInputItem] | RunState[Any],
        **kwargs: Unpack[RunOptions[Any]],
    ) -> RunResult:
        """`Runner.run`, governed inside a kernos run."""
        if CURRENT.get(None) is None:
            return await super().run(starting_agent, input, **kwargs)
        return await super().run(_governing(starting_agent), input, **_in_run(kwargs))

    def run_streamed(
        self,
        starting_agent: SDKAgent[Any],
        input: str | list[TResponseInputItem] | RunState[Any],
        **kwargs: Unpack[RunOptions[Any]],
    ) -> RunResultStreaming:
        """`Runner.run_streamed`, governed inside a kernos run."""
        if CURRENT.get(None) is None:
            return super().run_streamed(starting_agent, input, **kwargs)
        return super().run_streamed(_governing(starting_agent), input, **_in_run(kwargs))


_RUNNER = GovernedRunner()


def install() -> None:
    """Make the SDK's runner kernos's, and its tracing silent, in this process (idempotent)."""
    _without_sdk_tracing()
    set_default_agent_runner(_RUNNER)


async def decided(result: RunResult | RunResultStreaming) -> RunState[Any]:
    """`result`'s run state, each tool call it holds for approval decided by a human.

    Each is an `approval.ask` syscall of the run: the run waits (`awaiting-approval` in the
    Temporal UI) until someone `kernos approve`s or denies it, or its time is up (a denial). A
    denied call is rejected; the model reads why as the tool's answer. Resume with
    `Runner.run(agent, state)`.
    """
    state = result.to_state()
    items = list(result.interruptions)
    refusals = await asyncio.gather(*(_asked(item) for item in items))
    for item, refusal in zip(items, refusals, strict=True):
        if refusal is None:
            state.approve(item)
        else:
            state.reject(item, rejection_message=refusal)
    return state


async def _asked(item: ToolApprovalItem) -> str | None:
    """None once a human approved `item`'s call; otherwise what the model is told."""
    raw = item.raw_item
    call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
    try:
        request = ApprovalAsk(
            tool=item.name or "", arguments=item.arguments or "{}", call_id=str(call_id or "")
        )
    except ValidationError as exc:
        return f"not run (InvalidRequest): {exc.errors()[0]['msg']}"
    try:
        await current_run().call(APPROVAL_ASK, request, f"{request.tool} {request.call_id}")
    except AccessDenied as exc:
        return f"not approved: {exc}"
    return None


def wrap(agent: SDKAgent[Any]) -> type[Agent]:
    """A kernos agent that runs `agent` with the SDK's runner, its calls as syscalls."""
    check(agent)
    install()
    governed = _governed(agent, {})

    class OpenAIAgentsRun(Agent):
        name: ClassVar[str] = agent.name
        description: ClassVar[str] = agent.handoff_description or ""

        async def run(self, task: str) -> str:
            """Run the SDK's agent on `task`, with humans deciding what it holds for them."""
            # What the SDK wraps of a tool's error (the kernel's own, Temporal's failure, a
            # cancellation) ends the run as itself: workflows/framework_errors.py.
            result = await _RUNNER.run(governed, task)
            while result.interruptions:
                result = await _RUNNER.run(governed, await decided(result))
            return _output(result.final_output)

    OpenAIAgentsRun.__qualname__ = f"OpenAIAgentsRun[{agent.name}]"
    return OpenAIAgentsRun
