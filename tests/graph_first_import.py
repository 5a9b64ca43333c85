"""A graph whose module's first LangChain import is a lazily handed-out class (`SystemMessage`).

Inside a run, that import would give the run its own copy of the class (LangChain's packages
hand their parts out through `importlib`, which the sandbox does not see), and LangChain's own
`isinstance` would refuse the message: kernos loads those packages before any run
(`LAZY_PACKAGES`).
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph


async def ask(state: MessagesState) -> dict[str, Any]:
    """The model's answer, told to be brief."""
    model = ChatOpenAI(model="fake-model", api_key="unused")
    return {"messages": [await model.ainvoke([SystemMessage("Be brief."), *state["messages"]])]}


briefly = StateGraph(MessagesState).add_node("ask", ask).add_edge(START, "ask").compile()
