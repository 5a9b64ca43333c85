"""LangGraph and LangChain on kernos: a compiled graph run as a governed, durable kernos run.

Register the graph itself by path (`[agents] helper = "my_app.graphs:agent"`, where `agent` is
what `StateGraph(...).compile()` or LangChain's `create_agent(...)` returns; its module need not
import kernos), or in code with `wrap(graph, input=..., output=...)`. Inside the run the graph
runs as LangGraph runs it, in the run's workflow; what it reaches goes through the kernel:

- **Model calls are `llm.chat` syscalls**, at two seams. `KernosChatModel` is a LangChain chat
  model whose every call is one (tools bound with `bind_tools`, `with_structured_output` as a
  JSON-schema format the server decodes to, usage back on the message). A `ChatOpenAI` (or any
  OpenAI client) built anywhere in the graph, a node's closure included, is reached below
  LangChain, at its HTTP transport (`kernos.adapters.openai_transport`).
- **Tools are `tool.call` syscalls** when they are the kernel's: `tools(...)` gives LangChain
  tools bound to tools registered with kernos (MCP servers' tools the same). The graph's own
  tools run in the run, where code can compute but reach nothing: one that tries fails the run
  with an error naming it. A synchronous tool is run in the run itself (LangChain would hand it
  to a thread, which a run does not have).
- **`interrupt()` is a kernos approval.** The graph gets an in-memory checkpointer for the run
  (Temporal's history is the durable record; a checkpointer the graph was compiled with is not
  written from inside a run). Each interrupt is an `approval.ask` syscall: the run waits
  (`awaiting-approval`) until `kernos approve` decides, and resumes the graph with the decision.
  A `HumanInTheLoopMiddleware` request resumes with one decision per action (`approve`, or
  `reject` with why); any other interrupt resumes with `{"approved": true}` or
  `{"approved": false, "reason": ...}`.

The task goes in as the graph's `messages` (a user message) when its state has that key, or as
the state itself when the task is a JSON object; the output is the final state's
`structured_response` as JSON, else its last message's text, else the state as JSON. `wrap`
takes functions for either.

Refused by name when the graph is loaded (nothing starts): an uncompiled `StateGraph`, a node's
`retry_policy` (kernos retries syscalls; a node's retries would sleep random delays a replay
cannot repeat), a store other than LangGraph's in-memory one, tool names no model can call,
versions other than the ones supported. A synchronous model call (`invoke` rather than
`ainvoke`) fails the run naming the call to use.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from importlib.metadata import version
from typing import Any, ClassVar

import httpx
import pydantic_core
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.pregel import Pregel
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command, Interrupt
from pydantic import BaseModel, ValidationError
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

from kernos.adapters import openai_transport
from kernos.adapters.kernel_tools import called, current_run
from kernos.agent import Agent
from kernos.kernel.errors import AccessDenied, ConfigError, InvalidRequest
from kernos.kernel.llm import chat_completions
from kernos.kernel.syscall_table import APPROVAL_ASK
from kernos.kernel.syscalls import (
    ApprovalAsk,
    LLMResponse,
    ToolCallRequest,
)
from kernos.kernel.syscalls.llm_calls import TOOL_NAME

#: The versions this adapter is written and tested against (their seams change between them).
SUPPORTED = {"langgraph": "1.2", "langchain-core": "1."}
_INSTALLED = {name: version(name) for name in SUPPORTED}
#: Errors of code that reached outside the run (the sandbox's refusal, no network).
_REACHED_OUT = (RestrictedWorkflowAccessError, OSError, httpx.TransportError)
#: The model's call id of the kernel tool being run (LangChain keeps it from the tool itself).
_CALL_ID: ContextVar[str] = ContextVar("kernos_langchain_call_id", default="")
#: Marks a graph's own tool already made to run in the run (a graph is loaded once per run).
_GOVERNED = "__kernos_governed__"
#: A kernel tool's parameters as LangChain sees them: any object, marked as the kernel's (which
#: tells the model the tool's schema) for whichever client sends it.
_KERNEL_PARAMETERS: dict[str, Any] = {
    "type": "object", "properties": {}, "additionalProperties": True,
    chat_completions.KERNEL_TOOL: True,
}  # fmt: skip

Graph = Pregel[Any, Any, Any, Any]


def _invalid(exc: ValidationError, what: str) -> InvalidRequest:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return InvalidRequest(f"{what}: {where + ': ' if where else ''}{error['msg']}")


class KernosTool(BaseTool):
    """A tool registered with the kernel, offered to a LangChain model: each call is `tool.call`.

    Its schema is the kernel's (the kernel tells the model), so the one here takes any object;
    the kernel validates the arguments and tells the model what was wrong.
    """

    args_schema: dict[str, Any] = _KERNEL_PARAMETERS

    async def arun(self, tool_input: Any, *args: Any, tool_call_id: str | None = None,
                   **kwargs: Any) -> Any:  # fmt: skip
        """LangChain's `arun`, keeping the model's id of the call for the syscall."""
        token = _CALL_ID.set(tool_call_id or "")
        try:
            return await super().arun(tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        finally:
            _CALL_ID.reset(token)

    async def _arun(self, *args: Any, run_manager: Any = None, **arguments: Any) -> str:
        return await called(self.name, json.dumps(arguments), _CALL_ID.get())

    def _run(self, *args: Any, **kwargs: Any) -> str:
        raise InvalidRequest(
            f"kernel tool {self.name!r} was called synchronously inside a kernos run, which "
            "cannot wait for a syscall there: call it with `await tool.ainvoke(...)`"
        )


def tools(*names: str) -> list[BaseTool]:
    """The kernel's registered tools `names`, as LangChain tools.

    For `create_agent`, a `ToolNode` or `bind_tools`.
    """
    made: list[BaseTool] = []
    for name in names:
        try:
            ToolCallRequest(name=name)
        except ValidationError as exc:
            raise ConfigError(
                f"{name!r} cannot name a kernos tool: {exc.errors()[0]['msg']}"
            ) from None
        made.append(KernosTool(name=name, description=f"The kernel's tool {name!r}."))
    return made


def _choice(choice: Any) -> Any:
    """LangChain's tool choice as a chat-completions body says it ("any" is "required")."""
    if choice == "any" or choice is True:
        choice = "required"
    elif choice is False:
        choice = "none"
    elif isinstance(choice, str) and choice not in ("auto", "none", "required"):
        choice = {"type": "function", "function": {"name": choice}}
    return choice


class KernosChatModel(BaseChatModel):
    """A LangChain chat model whose every call is an `llm.chat` syscall of the current run.

    `model` names a model kernos serves (None: the run's model). Only the async calls
    (`ainvoke`, `astream`, ...) work inside a run: a run cannot block on a syscall.
    """

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "kernos"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with `tools` offered.

        The kernel's by name (their parameters say so), the others by their schema.
        """
        kwargs.pop("strict", None)  # kernos decodes to the schema, strictly, where it can
        kwargs.pop("parallel_tool_calls", None)
        offered = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=offered, tool_choice=_choice(tool_choice), **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "json_schema",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """The model answering in `schema` (a pydantic model or a JSON schema), decoded to it.

        `method="json_schema"` (the default) asks for the schema as the response format, which
        the server's constrained decoding keeps to; `"function_calling"` asks for it as a tool.
        """
        if method != "json_schema":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        if is_model:
            json_schema = schema.model_json_schema()  # type: ignore[union-attr]
            name = schema.__name__  # type: ignore[union-attr]
        elif isinstance(schema, dict):
            json_schema = schema.get("schema", schema)
            name = str(schema.get("title") or schema.get("name") or "output")
        else:
            raise InvalidRequest(
                f"with_structured_output takes a pydantic model or a JSON schema, not {schema!r}"
            )
        bound = self.bind(response_format={
            "type": "json_schema", "json_schema": {"name": name[:64], "schema": json_schema}
        })  # fmt: skip
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
        )
        if not include_raw:
            return bound | parser

        async def parsed(message: AIMessage) -> dict[str, Any]:
            try:
                return {"raw": message, "parsed": await parser.ainvoke(message),
                        "parsing_error": None}  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - reported as LangChain reports it
                return {"raw": message, "parsed": None, "parsing_error": exc}

        return bound | RunnableLambda(parsed)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise InvalidRequest(
            "a kernos model was called synchronously (invoke) inside a kernos run, which cannot "
            "wait for a syscall there: make the node `async def` and `await model.ainvoke(...)`"
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        dispatcher = current_run()
        body = {
            "model": self.model or dispatcher.run.spec.model or "",
            "messages": convert_to_openai_messages(messages),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": stop,
            **kwargs,
        }
        request = chat_completions.request_from_body(body)
        reply = await dispatcher.llm_chat(request)
        return ChatResult(generations=[ChatGeneration(message=_ai_message(reply))],
                          llm_output={"model_name": reply.model})  # fmt: skip


def _ai_message(reply: LLMResponse) -> AIMessage:
    """The kernel's answer as LangChain's message: text, tool calls, usage."""
    calls, invalid = [], []
    for call in reply.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("the arguments are not a JSON object")
            calls.append(tool_call(name=call.name, args=arguments, id=call.id))
        except ValueError as exc:
            invalid.append(invalid_tool_call(name=call.name, args=call.arguments, id=call.id,
                                             error=str(exc)))  # fmt: skip
    usage = reply.usage
    return AIMessage(
        content=reply.text,
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata={
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
        response_metadata={"model_name": reply.model, "finish_reason": reply.finish_reason},
    )


def _confined(tool: StructuredTool) -> None:
    """Make the graph's own `tool` run in the run, failing it by name if it reaches out."""
    if getattr(tool, _GOVERNED, False):
        return
    own = tool.coroutine or tool.func
    if own is None:
        return

    @functools.wraps(own)
    async def in_run(*args: Any, **kwargs: Any) -> Any:
        try:
            answer = own(*args, **kwargs)
            return await answer if asyncio.iscoroutine(answer) else answer
        except _REACHED_OUT as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise InvalidRequest(
                f"tool {tool.name!r} reached outside the run ({exc}): register what does I/O "
                f"with @kernos.tool and give the graph kernos.adapters.langgraph.tools("
                f"{tool.name!r})"
            ) from None

    tool.coroutine = in_run
    object.__setattr__(tool, _GOVERNED, True)


def _graphs(graph: Graph) -> list[Graph]:
    """`graph` and the graphs inside it."""
    inside = graph.get_subgraphs(recurse=True)
    return [graph, *(sub for _, sub in inside if isinstance(sub, Pregel))]


def _tool_nodes(graph: Graph) -> list[ToolNode]:
    return [
        node.bound
        for each in _graphs(graph)
        for node in each.nodes.values()
        if isinstance(node.bound, ToolNode)
    ]


def check(graph: object) -> Graph:
    """The compiled graph; ConfigError naming what kernos cannot run in it."""
    for name, supported in SUPPORTED.items():
        if not _INSTALLED[name].startswith(supported):
            raise ConfigError(
                f"{name} {_INSTALLED[name]} is installed; kernos.adapters.langgraph supports "
                f"{supported}x (pip install 'kernos[langgraph]')"
            )
    if isinstance(graph, StateGraph):
        raise ConfigError("the agent is a StateGraph that was not compiled: register "
                          "graph.compile() (kernos gives it a checkpointer)")  # fmt: skip
    if not isinstance(graph, Pregel):
        raise ConfigError(f"{type(graph).__name__} is not a compiled LangGraph graph")
    if graph.store is not None and not isinstance(graph.store, InMemoryStore):
        raise ConfigError(
            f"graph {graph.name!r}: its store ({type(graph.store).__name__}) would be reached "
            "from inside the run: keep what lasts in kernos's memory and storage"
        )
    for each in _graphs(graph):
        for node_name, node in each.nodes.items():
            if node.retry_policy:
                raise ConfigError(
                    f"graph {graph.name!r}: node {node_name!r} has a retry_policy, which would "
                    "retry it after random delays a replay cannot repeat: kernos retries "
                    "syscalls (leave it unset)"
                )
    for tool_node in _tool_nodes(graph):
        for tool_name in tool_node.tools_by_name:
            if not TOOL_NAME.match(tool_name):
                raise ConfigError(
                    f"graph {graph.name!r}: tool name {tool_name!r} is not one a model can "
                    "call: 1-64 letters, digits, '_' or '-', starting with a letter"
                )
    return graph


def _input(graph: Graph, task: str) -> Any:
    """The task as the graph's input: its `messages`, or its state given as a JSON object."""
    if "messages" in graph.channels:
        return {"messages": [{"role": "user", "content": task}]}
    try:
        state = json.loads(task)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise InvalidRequest(
            f"graph {graph.name!r} takes no 'messages': submit the task as a JSON object of its "
            "input state, or wrap the graph with an input= function"
        )
    return state


def _output(state: Any) -> str:
    """The final state as the run's output."""
    if isinstance(state, dict):
        if state.get("structured_response") is not None:
            return pydantic_core.to_json(state["structured_response"]).decode()
        messages = state.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], BaseMessage):
            return messages[-1].text
    return pydantic_core.to_json(state, fallback=str).decode()


def _as_tool_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
    return cleaned if cleaned[:1].isalpha() else f"node_{cleaned}"[:64]


async def _ask(tool: str, arguments: Any, call_id: str) -> str | None:
    """None once a human approved; otherwise why not (a denial, an expiry)."""
    try:
        request = ApprovalAsk(
            tool=_as_tool_name(tool),
            arguments=pydantic_core.to_json(arguments, fallback=str).decode(),
            call_id=call_id[:128],
        )
    except ValidationError as exc:
        raise _invalid(exc, f"the interrupt of {tool!r} cannot be asked of a human") from None
    try:
        await current_run().call(APPROVAL_ASK, request, f"{request.tool} {request.call_id}")
    except AccessDenied as exc:
        return str(exc)
    return None


async def _decision(node: str, interrupt: Interrupt, number: int) -> Any:
    """What the graph resumes with once humans decided `interrupt`, the run's `number`th.

    Asked by the interrupt's number in the run, not LangGraph's id for it: that id derives
    from checkpoint ids made of the clock, which a replay does not repeat, and the kernel knows
    an ask by what it asks.
    """
    value = interrupt.value
    actions = value.get("action_requests") if isinstance(value, dict) else None
    if isinstance(actions, list):  # LangChain's HumanInTheLoopMiddleware
        decisions = []
        for index, action in enumerate(actions):
            asked = action if isinstance(action, dict) else {}
            refusal = await _ask(str(asked.get("name")), asked.get("args", {}),
                                 f"interrupt-{number}-{index}")  # fmt: skip
            rejected = {"type": "reject", "message": f"not approved: {refusal}"}
            decisions.append({"type": "approve"} if refusal is None else rejected)
        return {"decisions": decisions}
    refusal = await _ask(node, value, f"interrupt-{number}")
    return {"approved": True} if refusal is None else {"approved": False, "reason": refusal}


def install() -> None:
    """Turn OpenAI clients' requests inside runs into syscalls, in this process (idempotent)."""
    openai_transport.install()


def wrap(
    graph: Graph,
    *,
    input: Callable[[str], Any] | None = None,
    output: Callable[[Any], str] | None = None,
) -> type[Agent]:
    """A kernos agent that runs the compiled `graph`, its calls as syscalls.

    `input` makes the graph's input from the task, `output` the run's output from the final
    state (defaults: see the module's doc).
    """
    check(graph)
    install()
    for node in _tool_nodes(graph):
        for tool in node.tools_by_name.values():
            if isinstance(tool, StructuredTool):
                _confined(tool)
    into = input or functools.partial(_input, graph)
    out = output or _output

    class LangGraphRun(Agent):
        name: ClassVar[str] = graph.name
        description: ClassVar[str] = f"LangGraph graph {graph.name!r}"

        async def run(self, task: str) -> str:
            """Run the graph on `task`, with humans deciding each interrupt."""
            runnable = graph.copy(update={"checkpointer": InMemorySaver()})
            config: Any = {"configurable": {"thread_id": "run"}}
            numbers = itertools.count(1)
            try:
                state = await runnable.ainvoke(into(task), config)
                while True:
                    snapshot = await runnable.aget_state(config)
                    asked = [(t.name, i) for t in snapshot.tasks for i in t.interrupts]
                    if not asked:
                        break
                    resume = {}
                    for node, interrupt in asked:
                        resume[interrupt.id] = await _decision(node, interrupt, next(numbers))
                    state = await runnable.ainvoke(Command(resume=resume), config)
            except _REACHED_OUT as exc:
                if isinstance(exc, TimeoutError):
                    raise
                raise InvalidRequest(
                    f"graph {graph.name!r} reached outside the run ({exc}): a run reaches "
                    "nothing but its syscalls (kernos.adapters.langgraph.tools, "
                    "KernosChatModel)"
                ) from None
            return out(state)

    LangGraphRun.__qualname__ = f"LangGraphRun[{graph.name}]"
    return LangGraphRun
