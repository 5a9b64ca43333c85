"""OpenAI's chat-completions API read as `llm.chat` and answered (kernel/llm/chat_completions.py):
what the official client sends is taken, what kernos cannot honour is refused by name, and what
it answers is what the official client parses."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
)

from kernos.kernel.errors import InvalidRequest
from kernos.kernel.llm.chat_completions import (
    KERNEL_TOOL,
    chunks,
    completion,
    request_from_body,
    server_sent,
)
from kernos.kernel.syscalls import LLMResponse, TokenUsage, ToolCall

ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def body(**more: Any) -> dict[str, Any]:
    return {**ASK, **more}


def test_a_plain_body_is_the_llm_chat_it_asks_for() -> None:
    request = request_from_body(body(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"},
                                         {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        temperature=0.5, max_completion_tokens=None, max_tokens=7, stop="END", seed=3,
        frequency_penalty=0, stream=False,
    ))  # fmt: skip
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."), ("user", "ab"), ("assistant", ""), ("tool", "42"),
    ]  # fmt: skip
    assert request.messages[2].tool_calls == [ToolCall(id="c1", name="f", arguments="{}")]
    assert (request.sampling.temperature, request.sampling.max_tokens) == (0.5, 7)
    assert (request.sampling.stop, request.sampling.seed) == (["END"], 3)


def test_a_tool_marked_as_the_kernels_is_offered_by_name_the_others_by_schema() -> None:
    tools = [
        {"type": "function", "function": {"name": "calculator",
                                          "parameters": {"type": "object", KERNEL_TOOL: True}}},
        {"type": "function", "function": {"name": "shout", "description": "Shout.",
                                          "parameters": {"type": "object", "properties": {}}}},
    ]  # fmt: skip
    request = request_from_body(body(tools=tools, tool_choice="required"))
    assert request.tools == ["calculator"] and request.tool_choice == "required"
    assert [(s.name, s.description) for s in request.agent_tools] == [("shout", "Shout.")]
    named = request_from_body(
        body(tools=tools, tool_choice={"type": "function", "function": {"name": "shout"}})
    )
    assert (named.tools, [s.name for s in named.agent_tools]) == ([], ["shout"])


def test_a_json_schema_response_format_is_the_requests_format() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = request_from_body(
        body(
            response_format={"type": "json_schema", "json_schema": {"name": "N", "schema": schema}}
        )
    )
    assert request.response_format is not None
    assert (request.response_format.name, request.response_format.json_schema) == ("N", schema)


@pytest.mark.parametrize(
    ("changed", "problem"),
    [
        ({"messages": "hi"}, "field 'messages' must be a list"),
        ({"messages": ["hi"]}, "field 'messages[]' must be an object"),
        ({"messages": [{"role": "assistant", "tool_calls": "f"}]}, "'messages[].tool_calls' must"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]},
            "'messages[].tool_calls[].function' must be an object",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "a part of type 'image_url'",
        ),
        ({"messages": [{"role": "critic", "content": "x"}]}, "message role 'critic'"),
        ({"tools": [{"type": "function", "function": {"name": ["f"]}}]}, "without a name"),
        ({"tools": [{"type": "web_search"}]}, "kernos takes function tools"),
        ({"tool_choice": {"type": "allowed_tools"}}, "'tool_choice': {'type': 'allowed_tools'}"),
        ({"tool_choice": {"type": "function", "function": {"name": "g"}}}, "names 'g'"),
        ({"response_format": {"type": "json_schema"}}, "json_schema with a 'schema'"),
        ({"stream_options": "yes"}, "field 'stream_options' must be an object"),
        ({"stream": "yes"}, "field 'stream' must be true or false"),
        ({"n": 2}, "kernos generates one choice"),
        ({"presence_penalty": 0.5}, "field 'presence_penalty' is not supported"),
        ({"audio": {"voice": "alloy"}}, "field 'audio' is not supported"),
        ({"model": ""}, "'model' must name a model"),
        ({"temperature": 9}, "temperature: Input should be less than or equal to 2"),
    ],
)
def test_what_kernos_cannot_take_is_refused_naming_the_field(
    changed: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidRequest, match=f"chat-completions.*{re.escape(problem)}"):
        request_from_body(body(**changed))


ANSWER = LLMResponse(
    text="", model="m", usage=TokenUsage(input_tokens=5, output_tokens=2),
    tool_calls=[ToolCall(id="c1", name="f", arguments='{"x": 1}')],
)  # fmt: skip


def test_the_answer_is_a_completion_the_official_client_parses() -> None:
    parsed = ChatCompletion.model_validate(completion(ANSWER, id="chatcmpl-1", created=0))
    [choice] = parsed.choices
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.arguments == '{"x": 1}'
    assert parsed.usage is not None and parsed.usage.total_tokens == 7


def test_the_streamed_answer_is_chunks_the_official_client_parses() -> None:
    made = chunks(ANSWER, id="chatcmpl-1", created=0, include_usage=True)
    parsed = [ChatCompletionChunk.model_validate(chunk) for chunk in made]
    assert parsed[0].choices[0].delta.tool_calls is not None
    assert parsed[1].choices[0].finish_reason == "tool_calls"
    assert parsed[2].choices == [] and parsed[2].usage is not None
    assert server_sent(made).endswith(b"data: [DONE]\n\n")
