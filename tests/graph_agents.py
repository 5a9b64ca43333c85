"""Agents written with LangGraph and LangChain, as users write them: this module imports no kernos.

Registered by path (`"tests.graph_agents:helper"`); the registry recognises each compiled graph
inside the pool that runs it. The ones that need kernos's own model or tools are in
`tests/graph_tool_agents.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AnyMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import RetryPolicy, interrupt
from pydantic import BaseModel
from typing_extensions import TypedDict

#: The model the fast tier's fake kernel serves (tests/fake_kernel.py).
MODEL = "fake-model"


class Chat(TypedDict):
    """A graph's state: the conversation."""

    messages: Annotated[list[AnyMessage], add_messages]


async def ask_openai(state: Chat) -> dict[str, Any]:
    """A node that builds its own OpenAI client, as tutorials do: no seam of LangChain's reaches
    it, its transport does."""
    model = ChatOpenAI(model=MODEL, api_key="unused", temperature=0.0, stream_usage=True)
    prompt = [SystemMessage("Answer briefly."), *state["messages"]]
    return {"messages": [await model.ainvoke(prompt)]}


#: One node whose ChatOpenAI is made inside it.
closure = StateGraph(Chat).add_node("ask", ask_openai).add_edge(START, "ask").compile()


@tool
def shout(text: str) -> str:
    """Upper-case `text` (synchronous: LangChain would run it in a thread)."""
    return text.upper()


@tool
async def peek() -> str:
    """Read the machine's name: I/O, which code in a run cannot do."""
    return Path("/etc/hostname").read_text()


def confirm(state: Chat) -> dict[str, Any]:
    """Ask a human before answering (synchronous: LangGraph calls it in the run's loop)."""
    decision = interrupt({"question": "May I answer?", "draft": state["messages"][-1].text})
    if not decision.get("approved"):
        return {"messages": [{"role": "assistant", "content": f"withheld: {decision['reason']}"}]}
    return {}


async def shouting_model(state: Chat) -> dict[str, Any]:
    """The model, through ChatOpenAI's transport: made to call `shout` first, then to answer.

    Bounded as graphs for small models are: offered the tool for ever, a 270M model calls it
    for ever.
    """
    model: Any = ChatOpenAI(model=MODEL, api_key="unused", temperature=0.0, max_tokens=64)
    if not any(isinstance(message, ToolMessage) for message in state["messages"]):
        model = model.bind_tools([shout], tool_choice="required")
    return {"messages": [await model.ainvoke(state["messages"])]}


def _shouting() -> Any:
    graph = StateGraph(Chat)
    graph.add_node("model", shouting_model)
    graph.add_node("tools", ToolNode([shout]))
    graph.add_node("confirm", confirm)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, {"tools": "tools", END: "confirm"})
    graph.add_edge("tools", "model")
    graph.add_edge("confirm", END)
    return graph.compile()


#: A hand-written graph: a model, a tool node, and a human's approval before the answer.
shouting = _shouting()


async def peeking_model(state: Chat) -> dict[str, Any]:
    """The model, offered `peek`."""
    model = ChatOpenAI(model=MODEL, api_key="unused").bind_tools([peek])
    return {"messages": [await model.ainvoke(state["messages"])]}


#: Its tool reaches outside the run: the run fails, naming it.
peeking = (
    StateGraph(Chat)
    .add_node("model", peeking_model)
    .add_node("tools", ToolNode([peek]))
    .add_edge(START, "model")
    .add_conditional_edges("model", tools_condition)
    .add_edge("tools", "model")
    .compile()
)


def blocking_model(state: Chat) -> dict[str, Any]:
    """A synchronous node calling its model synchronously: it cannot wait for a syscall."""
    return {"messages": [ChatOpenAI(model=MODEL, api_key="unused").invoke(state["messages"])]}


blocking = StateGraph(Chat).add_node("ask", blocking_model).add_edge(START, "ask").compile()


class Launch(BaseModel):
    """What `launching` answers with."""

    target: str
    launched: bool


@tool
async def launch(target: str) -> str:
    """Launch at `target`."""
    return f"launched at {target}"


#: `create_agent` with a tool a human approves (LangChain's own middleware) and a typed answer.
launching = create_agent(
    model=ChatOpenAI(model=MODEL, api_key="unused"),
    tools=[launch],
    system_prompt="Launch what the user asks for.",
    middleware=[HumanInTheLoopMiddleware(interrupt_on={"launch": True})],
    response_format=Launch,
)

#: Not compiled: refused at load.
uncompiled = StateGraph(Chat).add_node("ask", ask_openai).add_edge(START, "ask")

#: A node LangGraph would retry after random delays: refused at load.
retrying = (
    StateGraph(Chat)
    .add_node("ask", ask_openai, retry_policy=RetryPolicy(max_attempts=3))
    .add_edge(START, "ask")
    .compile()
)


@tool("shout.loud")
async def shout_loud(text: str) -> str:
    """Upper-case `text`, loudly."""
    return text.upper() + "!"


#: A tool name no model can call: refused at load.
misnamed = (
    StateGraph(Chat).add_node("tools", ToolNode([shout_loud])).add_edge(START, "tools").compile()
)
