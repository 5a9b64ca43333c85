"""LangGraph and LangChain agents that import kernos: its chat model and its tools."""

from __future__ import annotations

import json
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

import kernos
from kernos.adapters.langgraph import KernosChatModel, tools

#: `create_agent` on kernos's own model, given the kernel's calculator.
calculating = create_agent(
    model=KernosChatModel(),
    tools=tools("calculator"),
    system_prompt="Use the calculator for arithmetic, then answer with the number.",
)

#: A tool of an MCP server configured in kernos (`[tools.mcp.test]`), as the kernel's.
adding = create_agent(model=KernosChatModel(), tools=tools("test__add"), system_prompt="Add.")


class City(BaseModel):
    """What `naming` answers with."""

    name: str
    country: str


class Question(TypedDict, total=False):
    """`naming`'s state: the country asked about, and the answer."""

    country: str
    city: dict[str, Any]


async def name_capital(state: Question) -> dict[str, Any]:
    """Asks for the capital as a `City`, decoded to its schema."""
    model = KernosChatModel(temperature=0.0, max_tokens=64).with_structured_output(City)
    city = await model.ainvoke(f"Name the capital of {state['country']}.")
    return {"city": city.model_dump()}


#: A graph whose state is not a conversation: its task is the input state, as JSON.
naming = StateGraph(Question).add_node("name", name_capital).add_edge(START, "name").compile()


async def ask(state: MessagesState) -> dict[str, Any]:
    """A node whose ChatOpenAI streams when LangGraph's messages mode asks it to."""
    model = ChatOpenAI(model="fake-model", api_key="unused", stream_usage=True)
    return {"messages": [await model.ainvoke(state["messages"])]}


#: What `Streaming` streams (a pool sees this module alone, not `tests.graph_agents`).
asking = StateGraph(MessagesState).add_node("ask", ask).add_edge(START, "ask").compile()


class Streaming(kernos.Agent):
    """Streams `asking`'s model tokens as LangGraph streams them (`stream_mode="messages"`):
    its output is what it saw (JSON)."""

    name = "graph-streaming"

    async def run(self, task: str) -> str:
        """The streamed chunks' texts and the usage they carried."""
        texts: list[str] = []
        usage: list[int] = []
        stream = asking.astream({"messages": [HumanMessage(task)]}, stream_mode="messages")
        async for chunk, _ in stream:
            assert isinstance(chunk, AIMessageChunk), chunk
            texts.append(chunk.text)
            if chunk.usage_metadata:
                usage.append(chunk.usage_metadata["output_tokens"])
        return json.dumps({"texts": texts, "usage": usage})
