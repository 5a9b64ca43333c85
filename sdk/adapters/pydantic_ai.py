"""Pydantic AI on kernos: a `pydantic_ai.Agent` run as a governed, durable kernos run.

Register the agent itself by path (`[agents] helper = "my_app.agents:helper"`, where `helper` is
a `pydantic_ai.Agent`; its module need not import kernos), or in code with `wrap(agent, ...)`.
Inside the run the agent runs as Pydantic AI runs it (`agent.run`), in the run's workflow; what
it reaches goes through the kernel:

- **Model calls are `llm.chat` syscalls.** The run's model is `KernosModel`, Pydantic AI's own
  OpenAI chat model whose client asks the kernel instead of a server: Pydantic AI's request
  (tools, `tool_choice`, the output tool of an `output_type`, `NativeOutput`'s JSON schema,
  sampling settings) crosses as a chat-completions body (`kernel/llm/chat_completions.py`) and
  its answer, usage included, comes back as the model's. The model named on the agent (its
  name, `"openai:<name>"` or a model object's) is the one asked for; none: the run's. A typed
  `output_type` is a tool the model must call, which the kernel decodes to its schema.
- **Tools are `tool.call` syscalls** when they are the kernel's: `tools(...)` gives Pydantic AI
  tools bound to tools registered with kernos (MCP servers' tools the same). The agent's own
  function tools run in the run, where code can compute but reach nothing: one that tries fails
  the run with an error naming it. A synchronous tool runs in the run itself (Pydantic AI would
  hand it to a thread, which a run does not have).
- **A tool that requires approval is a kernos approval.** Each call Pydantic AI defers for one
  (`requires_approval=True`, or `ApprovalRequired` raised by the tool) is an `approval.ask`
  syscall: the run waits (`awaiting-approval`) until `kernos approve` decides; a denial reaches
  the model as Pydantic AI's `ToolDenied`, with the reason. A call deferred for execution
  elsewhere (`CallDeferred`) has no one outside the run to run it: the run fails, naming it.
- **Streamed runs** (`agent.run_stream`) work inside a `kernos.Agent` that drives the agent
  itself (with `capabilities=[Governed()]` for its approvals); each model answer streams whole.

The task is the run's user prompt; the output is the agent's output, as text, or JSON for a
typed one. **Dependencies** (`deps`) are made inside the run by `wrap(agent, deps=...)` from the
task: nothing from outside crosses into a run, and what they hold reaches nothing from there
(a connection or client in them fails as a tool doing I/O does): give the agent kernel tools
for I/O, and plain values as its deps.

Refused by name when the agent is loaded (nothing starts): toolsets other than function tools
(an MCP server's toolset would start or reach a server from inside the run: register the server
with kernos and use `tools(...)`), Pydantic AI's own capabilities that reach outside the run, a
`FallbackModel` or a model name kernos cannot serve, tool names no model can call, a Pydantic AI
other than the version supported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, ClassVar

import httpx
import httpx2
import pydantic_core
from openai import AsyncOpenAI
from pydantic import ValidationError
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai import RunContext, Tool

# The switch behind Pydantic AI's `disable_threads()`, set for a whole run (version pinned).
from pydantic_ai._utils import _disable_threads as _threads_off
from pydantic_ai.capabilities import AbstractCapability, WrapRunHandler
from pydantic_ai.capabilities.abstract import leaf_capabilities
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolDenied
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

from kernos.adapters import openai_transport
from kernos.adapters.kernel_tools import called, current_run
from kernos.agent import Agent
from kernos.kernel.errors import AccessDenied, ConfigError, InvalidRequest
from kernos.kernel.llm import chat_completions
from kernos.kernel.syscall_table import APPROVAL_ASK
from kernos.kernel.syscalls import ApprovalAsk, ToolCallRequest
from kernos.kernel.syscalls.common import check_name
from kernos.kernel.syscalls.llm_calls import TOOL_NAME
from kernos.workflows.dispatcher import CURRENT

#: The version this adapter is written and tested against (its seams change between them).
SUPPORTED = {"pydantic-ai-slim": "2.68."}
_INSTALLED = {name: version(name) for name in SUPPORTED}
#: Errors of code that reached outside the run (the sandbox's refusal, no network).
_REACHED_OUT = (RestrictedWorkflowAccessError, OSError, httpx.TransportError, httpx2.TransportError)
#: A kernel tool's parameters as Pydantic AI sees them: any object, marked as the kernel's (the
#: kernel tells the model the tool's schema and checks the arguments).
_KERNEL_PARAMETERS: dict[str, Any] = {
    "type": "object", "properties": {}, "additionalProperties": True,
    chat_completions.KERNEL_TOOL: True,
}  # fmt: skip


class _KernelTransport(httpx2.AsyncBaseTransport):
    """The HTTP transport of `KernosModel`'s client: the kernel answers, inside a run only."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await openai_transport.answered(request)  # type: ignore[no-any-return]


class KernosModel(OpenAIChatModel):
    """Pydantic AI's OpenAI chat model, each request an `llm.chat` syscall of the current run.

    `model` names a model kernos serves (None: the run's). Outside a kernos run every request
    fails, naming why.
    """

    def __init__(self, model: str | None = None) -> None:
        client = AsyncOpenAI(
            api_key="kernos",  # never sent: the kernel's records say who asks
            base_url="http://kernel.kernos.invalid/v1",
            max_retries=0,  # the kernel retries; a refusal is final
            http_client=httpx2.AsyncClient(transport=_KernelTransport()),
        )
        super().__init__(model or "", provider=OpenAIProvider(openai_client=client))

    @property
    def model_name(self) -> str:
        """The model asked for: this model's name, else the current run's."""
        if self._model_name:
            return self._model_name
        dispatcher = CURRENT.get(None)
        return (dispatcher.run.spec.model or "") if dispatcher is not None else ""


def _kernel_tool(name: str) -> Tool[Any]:
    async def call(ctx: RunContext[Any], /, **arguments: Any) -> str:
        return await called(name, json.dumps(arguments), ctx.tool_call_id or "")

    return Tool.from_schema(
        call, name=name, description=f"The kernel's tool {name!r}.",
        json_schema=_KERNEL_PARAMETERS, takes_ctx=True,
    )  # fmt: skip


def tools(*names: str) -> list[Tool[Any]]:
    """The kernel's registered tools `names`, as Pydantic AI tools (`Agent(tools=...)`)."""
    made = []
    for name in names:
        try:
            ToolCallRequest(name=name)
        except ValidationError as exc:
            raise ConfigError(
                f"{name!r} cannot name a kernos tool: {exc.errors()[0]['msg']}"
            ) from None
        made.append(_kernel_tool(name))
    return made


async def _asked(call: ToolCallPart) -> str | None:
    """None once a human approved `call`; otherwise why not.

    A denial, an expiry, or a call that cannot be asked.
    """
    try:
        request = ApprovalAsk(
            tool=call.tool_name, arguments=call.args_as_json_str(), call_id=call.tool_call_id
        )
    except ValidationError as exc:  # the model's call: the model reads what was wrong
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"the call cannot be asked of a human: {where}: {error['msg']}"
    try:
        await current_run().call(APPROVAL_ASK, request, f"{request.tool} {request.call_id}")
    except AccessDenied as exc:
        return str(exc)
    return None


class Governed(AbstractCapability[Any]):
    """What kernos adds to each run of a Pydantic AI agent.

    The calls that need approval are asked of humans, and a tool that reaches outside the run
    is named. Registered agents have it; a `kernos.Agent` that runs a Pydantic AI agent itself
    passes it (`agent.run(..., capabilities=[Governed()])`).
    """

    @classmethod
    def get_serialization_name(cls) -> str | None:
        """None: not part of an agent's spec (kernos adds it to each run)."""
        return None

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> Any:
        """The run with synchronous tools and callbacks run in it (a run has no threads)."""
        token = _threads_off.set(True)
        try:
            return await handler()
        finally:
            _threads_off.reset(token)

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        """Each call that needs approval asked of humans; a call deferred elsewhere refused."""
        if requests.calls:
            names = sorted({call.tool_name for call in requests.calls})
            raise InvalidRequest(
                f"tool {names[0]!r} deferred its call to be run outside the agent "
                "(CallDeferred), which a kernos run has no one to do: register it with "
                "@kernos.tool and give the agent kernos.adapters.pydantic_ai.tools("
                f"{names[0]!r})"
            )
        # Asked at once, so humans see every call of the turn; in the model's order.
        refusals = await asyncio.gather(*(_asked(call) for call in requests.approvals))
        approvals: dict[str, bool | ToolDenied] = {
            call.tool_call_id: True if refusal is None else ToolDenied(f"not approved: {refusal}")
            for call, refusal in zip(requests.approvals, refusals, strict=True)
        }
        return requests.build_results(approvals=approvals)

    async def on_tool_execute_error(
        self, ctx: RunContext[Any], *, call: ToolCallPart, tool_def: Any, args: Any,
        error: Exception,
    ) -> Any:  # fmt: skip
        """A tool that reached outside the run, named; any other error as it is."""
        if isinstance(error, _REACHED_OUT) and not isinstance(error, TimeoutError):
            raise InvalidRequest(
                f"tool {call.tool_name!r} reached outside the run ({error}): register what "
                "does I/O with @kernos.tool and give the agent "
                f"kernos.adapters.pydantic_ai.tools({call.tool_name!r})"
            ) from None
        raise error


def _model_name(agent: PydanticAgent[Any, Any]) -> str | None:
    """The model the agent names, if one; ConfigError if kernos cannot ask for it.

    `"openai:<name>"` or `"<name>"` (the provider is dropped: the kernel's records say which
    servers serve a model), or a model object's name.
    """
    model = agent.model
    if model is None:
        return None
    if isinstance(model, FallbackModel):
        raise ConfigError(
            f"Pydantic AI agent {agent.name or 'agent'!r}: its model is a FallbackModel; kernos "
            "chooses among a model's instances and retries them itself: name one model"
        )
    if isinstance(model, Model):
        name = model.model_name  # KernosModel(): none, so the run's
    else:
        name = str(model).partition(":")[2] or str(model)
    if not name:
        return None
    try:
        return check_name("model", name)
    except ValueError as exc:
        raise ConfigError(f"Pydantic AI agent {agent.name or 'agent'!r}: {exc}") from None


#: Pydantic AI's own capabilities that only compute (an agent's own capability classes are its
#: code, and run in the run like the rest of it). Any other of Pydantic AI's reaches outside the
#: run from code the sandbox does not check (a workspace, the web, other models, MCP, threads).
_COMPUTING = frozenset({
    "AbstractCapability", "WrapperCapability", "CombinedCapability", "ToolSearch",
    "PendingMessageDrainCapability", "Hooks", "PrepareTools", "PrepareOutputTools",
    "ProcessHistory", "HistoryProcessor", "ProcessEventStream", "ReinjectSystemPrompt",
    "SetToolMetadata", "IncludeToolReturnSchemas", "PrefixTools", "Thinking", "Instrumentation",
    "HandleDeferredToolCalls", "Toolset",
})  # fmt: skip


def _reaching(capability: AbstractCapability[Any]) -> str | None:
    """The name of a Pydantic AI class of `capability`'s that may reach outside the run.

    None if it is made of computing classes only.
    """
    for cls in type(capability).__mro__:
        own = cls.__module__.partition(".")[0] == "pydantic_ai"
        if own and issubclass(cls, AbstractCapability) and cls.__name__ not in _COMPUTING:
            return cls.__name__
    return None


def check(agent: object) -> PydanticAgent[Any, Any]:
    """The agent; ConfigError naming what kernos cannot run in it."""
    for name, supported in SUPPORTED.items():
        if not _INSTALLED[name].startswith(supported):
            raise ConfigError(
                f"{name} {_INSTALLED[name]} is installed; kernos.adapters.pydantic_ai supports "
                f"{supported}x (pip install 'kernos[pydantic-ai]')"
            )
    if not isinstance(agent, PydanticAgent):
        raise ConfigError(f"{type(agent).__name__} is not a pydantic_ai.Agent")
    label = agent.name or "agent"
    _model_name(agent)
    toolsets = list(agent.toolsets)
    for capability in leaf_capabilities(agent.root_capability):
        reaching = _reaching(capability)
        if reaching is not None:
            raise ConfigError(
                f"Pydantic AI agent {label!r}: its capability {reaching} would reach outside "
                "the run from Pydantic AI's own code: give the agent the kernel's tools "
                "(kernos.adapters.pydantic_ai.tools) for what it needs from outside"
            )
        found = capability.get_toolset()
        if found is not None:
            if not isinstance(found, AbstractToolset):
                raise ConfigError(
                    f"Pydantic AI agent {label!r}: a capability's toolset is made at run time, "
                    "which kernos cannot check before the run reaches it"
                )
            toolsets.append(found)
    leaves: list[AbstractToolset[Any]] = []
    for toolset in toolsets:
        toolset.apply(leaves.append)
    for toolset in leaves:
        if not isinstance(toolset, FunctionToolset):
            raise ConfigError(
                f"Pydantic AI agent {label!r}: its toolset {type(toolset).__name__} is not "
                "function tools, which kernos cannot check before the run reaches it: register "
                "MCP servers and tools that do I/O with kernos and give the agent "
                "kernos.adapters.pydantic_ai.tools(...)"
            )
        for tool_name in toolset.tools:
            if not TOOL_NAME.match(tool_name):
                raise ConfigError(
                    f"Pydantic AI agent {label!r}: tool name {tool_name!r} is not one a model "
                    "can call: 1-64 letters, digits, '_' or '-', starting with a letter"
                )
    return agent


def _output(output: Any) -> str:
    """The agent's output as the run's output: text, or JSON for a typed output."""
    if isinstance(output, str):
        return output
    return pydantic_core.to_json(output, fallback=str).decode()


def install() -> None:
    """Turn OpenAI clients' requests inside runs into syscalls, in this process (idempotent)."""
    openai_transport.install()


def in_the_run() -> None:
    """Have Pydantic AI run synchronous tools and callbacks in the run, in this run's context.

    Pydantic AI hands them to threads, which a run does not have (its own switch for sandboxed
    event loops). Called by the registry as each run loads its agent.
    """
    _threads_off.set(True)


def wrap(
    agent: PydanticAgent[Any, Any],
    *,
    input: Callable[[str], str] | None = None,
    output: Callable[[Any], str] | None = None,
    deps: Callable[[str], Any] | None = None,
) -> type[Agent]:
    """A kernos agent that runs `agent`, its calls as syscalls.

    `input` makes the user prompt from the task, `output` the run's output from the agent's,
    `deps` the agent's dependencies from the task, inside the run (defaults: the task, the
    output as text or JSON, no deps).
    """
    check(agent)
    install()
    named = _model_name(agent)
    label = agent.name or "pydantic-ai"

    class PydanticAIRun(Agent):
        name: ClassVar[str] = label
        description: ClassVar[str] = f"Pydantic AI agent {label!r}"

        async def run(self, task: str) -> str:
            """Run the agent on `task`, humans deciding the calls that need approval."""
            prompt = input(task) if input else task
            made = deps(task) if deps else None
            try:
                result = await agent.run(
                    prompt, model=KernosModel(named), deps=made, capabilities=[Governed()]
                )
            except _REACHED_OUT as exc:
                if isinstance(exc, TimeoutError):
                    raise
                raise InvalidRequest(
                    f"Pydantic AI agent {label!r} reached outside the run ({exc}): a run "
                    "reaches nothing but its syscalls (kernos.adapters.pydantic_ai.tools, "
                    "KernosModel)"
                ) from None
            return (output or _output)(result.output)

    PydanticAIRun.__qualname__ = f"PydanticAIRun[{label}]"
    return PydanticAIRun
