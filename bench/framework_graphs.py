"""bench/frameworks.py's LangGraph workload: one tool-using graph, as each side runs it.

A model node offered a calculator, a tool node, back to the model, which answers: two model
calls and one tool call a task, as the OpenAI Agents SDK's workload (`framework_agents.py`).
Run directly, the model is LangChain's `ChatOpenAI`, one client per server taken in turn, and
the calculator a tool of the graph's own; on kernos
(`framework_kernos_graph.py`, which imports kernos) the model is `KernosChatModel` and the
calculator the kernel's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from langchain_core.messages import SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
MAX_TOKENS = 32


@tool
async def calculator(expression: str) -> str:
    """Evaluate a product of two whole numbers, `a * b`."""
    left, _, right = expression.partition("*")
    return str(int(left) * int(right))


#: The servers' models, one client each, taken in turn: what a graph does without a kernel.
_models: Iterator[Any] = iter(())


def serve_from(base_urls: list[str], model: str) -> None:
    """Have the graph's model node ask the servers at `base_urls` in turn, for `model`."""
    global _models
    clients = [
        ChatOpenAI(model=model, base_url=f"{url}/v1", api_key="none", temperature=0.0,
                   max_tokens=MAX_TOKENS).bind_tools([calculator])
        for url in base_urls
    ]  # fmt: skip
    _models = itertools.cycle(clients)


async def call_model(state: MessagesState) -> dict[str, Any]:
    """The model node: the next server's answer to the conversation."""
    answer = await next(_models).ainvoke([SystemMessage(INSTRUCTIONS), *state["messages"]])
    return {"messages": [answer]}


def builder() -> StateGraph[Any, Any, Any, Any]:
    """The graph: the model, its tool, back to the model."""
    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode([calculator]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph


def output(state: dict[str, Any]) -> str:
    """The answer: the last message's text."""
    return str(state["messages"][-1].text)
