"""OpenAI's chat-completions API read as kernos's `llm.chat`, and its answers written back.

A request body becomes an `LLMRequest` (every field kernos cannot honour refused by name), and
an `LLMResponse` becomes a completion or its stream of chunks. Used where code that speaks
OpenAI's API meets the kernel: an OpenAI client inside a run (`kernos.adapters.openai_transport`).
The other direction, kernos calling an OpenAI-compatible server, is `kernel/llm/openai.py`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from kernos.kernel.errors import InvalidRequest
from kernos.kernel.syscalls import (
    JSONSchemaFormat,
    LLMRequest,
    LLMResponse,
    Message,
    Sampling,
    ToolCall,
    ToolSpec,
)

#: Body fields kernos reads.
_READ = {
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "tools", "tool_choice", "response_format", "stream", "stream_options",
    "n", "parallel_tool_calls",
}  # fmt: skip
#: Fields that only shape how the client is answered, or name who asks: no bearing here.
_IGNORED = {
    "user", "metadata", "store", "service_tier", "logprobs", "top_logprobs",
    "prompt_cache_key", "safety_identifier",
}  # fmt: skip
#: Fields kernos takes only at their neutral value (they would change the answer otherwise).
_NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0}
#: In a function tool's parameters: the tool is the kernel's registered tool of that name, whose
#: schema the kernel tells the model (`kernos.adapters.langgraph.tools` marks its tools so).
KERNEL_TOOL = "x-kernos-tool"


def request_from_body(body: Any) -> LLMRequest:
    """The `llm.chat` a chat-completions body asks for.

    A function tool whose parameters hold `KERNEL_TOOL: true` is the kernel's registered tool;
    every other one is the caller's own (`agent_tools`). InvalidRequest names the field kernos
    cannot take.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("a chat-completions request must be a JSON object")
    unknown = sorted(
        k for k, v in body.items()
        if k not in _READ | _IGNORED and v is not None and not (k in _NEUTRAL and v == _NEUTRAL[k])
    )  # fmt: skip
    if unknown:
        raise InvalidRequest(f"chat-completions field {unknown[0]!r} is not supported by kernos")
    if body.get("n") not in (None, 1):
        raise InvalidRequest("chat-completions field 'n': kernos generates one choice")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("chat-completions field 'model' must name a model kernos serves")
    _options(body)
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    stop = body.get("stop")
    try:
        sampling = Sampling(
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            max_tokens=max_tokens,
            stop=[stop] if isinstance(stop, str) else stop,
            seed=body.get("seed"),
        )
        kernel, own, choice = _tools(body.get("tools") or [], body.get("tool_choice"))
        return LLMRequest(
            model=model,
            messages=[_message(m) for m in _list(body.get("messages"), "messages")],
            sampling=sampling,
            response_format=_format(body.get("response_format")),
            tools=kernel,
            agent_tools=own,
            tool_choice=choice,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise InvalidRequest(f"chat-completions request: {where}: {error['msg']}") from None


def _options(body: dict[str, Any]) -> None:
    """InvalidRequest unless `stream` and `stream_options` are what OpenAI's API takes."""
    if not isinstance(body.get("stream", False), bool | None):
        raise InvalidRequest("chat-completions field 'stream' must be true or false")
    _dict(body.get("stream_options") or {}, "stream_options")


def include_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed answer ends with a chunk of its usage.

    Of a body `request_from_body` took, so `stream_options` is an object.
    """
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"chat-completions field {field!r} must be a list")
    return value


def _dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"chat-completions field {field!r} must be an object")
    return value


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or text parts (kernos's messages are text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in _list(content, where):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text", ""), str):
            raise InvalidRequest(
                f"chat-completions {where}: a part of type {kind!r}; kernos's messages are text"
            )
        texts.append(part.get("text", ""))
    return "".join(texts)


def _message(raw: Any) -> Message:
    message = _dict(raw, "messages[]")
    role = message.get("role")
    content = _text(message.get("content"), f"{role} message content")
    if role in ("system", "developer"):
        return Message(role="system", content=content)
    if role == "user":
        return Message(role="user", content=content)
    if role == "assistant":
        calls = []
        for call in _list(message.get("tool_calls") or [], "messages[].tool_calls"):
            function = _dict(_dict(call, "messages[].tool_calls[]").get("function"),
                             "messages[].tool_calls[].function")  # fmt: skip
            calls.append(ToolCall(id=call.get("id"), name=function.get("name"),
                                  arguments=function.get("arguments") or "{}"))  # fmt: skip
        return Message(role="assistant", content=content, tool_calls=calls)
    if role == "tool":
        return Message(role="tool", content=content, tool_call_id=message.get("tool_call_id"))
    raise InvalidRequest(
        f"chat-completions message role {role!r}: kernos takes system, developer, user, "
        "assistant and tool messages"
    )


def _tools(raw: list[Any], choice: Any) -> tuple[list[str], list[ToolSpec], Any]:
    kernel: list[str] = []
    own: list[ToolSpec] = []
    for tool in _list(raw, "tools"):
        function = _dict(tool, "tools[]").get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest("chat-completions field 'tools': kernos takes function tools")
        name, parameters = function.get("name"), function.get("parameters") or {"type": "object"}
        if not isinstance(name, str):
            raise InvalidRequest("chat-completions field 'tools': a function without a name")
        if _dict(parameters, "tools[].function.parameters").get(KERNEL_TOOL) is True:
            kernel.append(name)
        else:
            own.append(ToolSpec(name=name, description=str(function.get("description") or ""),
                                parameters=parameters))  # fmt: skip
    if choice in (None, "auto"):
        return kernel, own, "auto"
    if choice == "none":
        return [], [], "auto"
    if choice == "required":
        return kernel, own, "required"
    function = choice.get("function") if isinstance(choice, dict) else None
    named = function.get("name") if isinstance(function, dict) else None
    if named is None:
        raise InvalidRequest(
            f"chat-completions field 'tool_choice': {choice!r} is not one kernos takes (auto, "
            "none, required, or a function by name)"
        )
    if named not in [*kernel, *(spec.name for spec in own)]:
        raise InvalidRequest(
            f"chat-completions field 'tool_choice' names {named!r}, which is not among 'tools'"
        )
    return [n for n in kernel if n == named], [s for s in own if s.name == named], "required"


def _format(raw: Any) -> JSONSchemaFormat | None:
    if raw is None or (isinstance(raw, dict) and raw.get("type") == "text"):
        return None
    if _dict(raw, "response_format").get("type") == "json_object":
        return JSONSchemaFormat(name="json_object", json_schema={"type": "object"})
    schema = raw.get("json_schema") if raw.get("type") == "json_schema" else None
    if not isinstance(schema, dict) or not isinstance(schema.get("schema"), dict):
        raise InvalidRequest(
            "chat-completions field 'response_format': kernos takes text, json_object, or "
            "json_schema with a 'schema'"
        )
    return JSONSchemaFormat(name=schema.get("name") or "output", json_schema=schema["schema"])


def _finish(response: LLMResponse) -> str:
    if response.tool_calls:
        return "tool_calls"
    return "length" if response.finish_reason == "length" else "stop"


def _usage(response: LLMResponse) -> dict[str, int]:
    usage = response.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _calls(response: LLMResponse, *, indexed: bool) -> list[dict[str, Any]]:
    return [
        {
            **({"index": i} if indexed else {}),
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for i, call in enumerate(response.tool_calls)
    ]


def completion(response: LLMResponse, *, id: str, created: int) -> dict[str, Any]:
    """The answer as a `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": response.text or None}
    if response.tool_calls:
        message["tool_calls"] = _calls(response, indexed=False)
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": _finish(response), "logprobs": None}
        ],
        "usage": _usage(response),
    }


def chunk(
    choices: list[dict[str, Any]], *, id: str, created: int, model: str, **more: Any
) -> dict[str, Any]:
    """One `chat.completion.chunk` object."""
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices, **more}  # fmt: skip


def text_chunk(text: str, *, first: bool, id: str, created: int, model: str) -> dict[str, Any]:
    """A chunk of the message's text as it is generated (the first also names the role)."""
    delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    return chunk([choice], id=id, created=created, model=model)


def chunks(
    response: LLMResponse, *, id: str, created: int, include_usage: bool, sent: str | None = None
) -> list[dict[str, Any]]:
    """The answer as `chat.completion.chunk` objects, after the text already `sent` (if any).

    The message (or its rest) in one delta, the finish in the next, and the usage in a last
    chunk with no choices when asked for.
    """
    model = response.model
    delta: dict[str, Any] = {"content": response.text}
    if sent is None:
        delta["role"] = "assistant"
    else:
        # What extends the text sent; nothing where the answer no longer does (a retried
        # attempt that sampled otherwise): sent text cannot be taken back.
        delta["content"] = response.text[len(sent) :] if response.text.startswith(sent) else ""
    if response.tool_calls:
        delta["tool_calls"] = _calls(response, indexed=True)
    made = [
        chunk([{"index": 0, "delta": delta, "finish_reason": None}],
              id=id, created=created, model=model),
        chunk([{"index": 0, "delta": {}, "finish_reason": _finish(response)}],
              id=id, created=created, model=model),
    ]  # fmt: skip
    if include_usage:
        made.append(chunk([], id=id, created=created, model=model, usage=_usage(response)))
    return made


def server_sent_chunk(event: dict[str, Any]) -> str:
    """One chunk (or an error) as a server-sent event."""
    return f"data: {json.dumps(event)}\n\n"


#: How OpenAI's API ends a stream of chunks.
STREAM_END = "data: [DONE]\n\n"


def server_sent(events: list[dict[str, Any]]) -> bytes:
    """Chunks as a server-sent event stream, ended as OpenAI ends one."""
    return ("".join(server_sent_chunk(event) for event in events) + STREAM_END).encode()


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """An error as OpenAI's API shapes one."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
