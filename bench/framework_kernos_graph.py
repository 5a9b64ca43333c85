"""bench/frameworks.py's LangGraph graph on kernos: the same graph, on kernos's model and tool.

Self-contained: a pool's confined process sees an agent's top-level module, not its folder,
so the instructions are `framework_graphs.py`'s, repeated (bench/frameworks.py checks that
they match).
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import SystemMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from kernos.adapters.langgraph import KernosChatModel, tools

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
MAX_TOKENS = 32

_model = KernosChatModel(temperature=0.0, max_tokens=MAX_TOKENS).bind_tools(tools("calculator"))


async def call_model(state: MessagesState) -> dict[str, Any]:
    """The model node: the kernel's answer to the conversation (an `llm.chat` syscall)."""
    return {"messages": [await _model.ainvoke([SystemMessage(INSTRUCTIONS), *state["messages"]])]}


_graph = StateGraph(MessagesState)
_graph.add_node("model", call_model)
_graph.add_node("tools", ToolNode(tools("calculator")))
_graph.add_edge(START, "model")
_graph.add_conditional_edges("model", tools_condition)
_graph.add_edge("tools", "model")
calc = _graph.compile()
