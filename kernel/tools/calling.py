"""Tool calling by constrained decoding: any server that decodes under a JSON schema can do it.

The model is told the tools in the system prompt and must answer with JSON that the schema
admits: `{"answer": "..."}`, or `{"tool_calls": [{"name": ..., "arguments": {...}}]}` where each
call names one of the offered tools with arguments that fit its parameters. Servers that turn
the schema into a grammar (llama.cpp, SGLang, vLLM) make even a small model emit well-formed
calls to allowed tools only. The kernel then parses the answer into `LLMResponse.tool_calls`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kernos.kernel.errors import UnknownTool
from kernos.kernel.syscalls import (
    JSONSchemaFormat,
    LLMRequest,
    LLMResponse,
    Message,
    ToolCall,
    ToolSpec,
)

#: The response format's name marks a request the kernel constrained for tool calls.
FORMAT_NAME = "kernos_tool_calls"
#: Calls the model may make in one turn.
MAX_CALLS_PER_TURN = 4

# Concrete forms, no placeholders: a small model copies a placeholder as it stands.
_CALL = (
    'To call tools, reply {"tool_calls": [{"name": "%s", "arguments": {...}}]} with the '
    "arguments its parameters describe; the results come back to you."
)
_ANSWER = 'To answer, reply {"answer": "..."} with your answer in place of the dots.'


def schema(specs: list[ToolSpec], *, required: bool = False) -> dict[str, Any]:
    """The JSON schema of a reply: an answer (unless calls are `required`) or tool calls.

    Each call names one of the tools, with arguments that fit its parameters.
    """
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": spec.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for spec in specs
    ]
    calling = {
        "type": "object",
        "properties": {
            "tool_calls": {
                "type": "array",
                "items": calls[0] if len(calls) == 1 else {"anyOf": calls},
                "minItems": 1,
                "maxItems": MAX_CALLS_PER_TURN,
            }
        },
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if required:
        return calling
    answering = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    return {"anyOf": [answering, calling]}


def offer(
    request: LLMRequest, registered: Mapping[str, ToolSpec], *, native: bool = False
) -> LLMRequest:
    """The request with its tools as the server will take them.

    `native`: the registry's schemas go to a server that calls tools itself (`tool_specs`);
    otherwise the kernel constrains the answer (`constrain`). Unknown tool names fail with
    UnknownTool; whatever `tool_specs` the workflow sent is replaced.
    """
    if not (request.tools or request.agent_tools):
        return request.model_copy(update={"tool_specs": []}) if request.tool_specs else request
    specs = _specs(request, registered)
    if native:
        return request.model_copy(update={"tool_specs": specs})
    return constrain(request.model_copy(update={"tool_specs": []}), registered)


def _specs(request: LLMRequest, registered: Mapping[str, ToolSpec]) -> list[ToolSpec]:
    """The kernel's tools the request names, from the registry, then the agent's own."""
    specs = []
    for name in request.tools:
        if name not in registered:
            raise UnknownTool(name, list(registered))
        specs.append(registered[name])
    return [*specs, *request.agent_tools]


def constrain(request: LLMRequest, registered: Mapping[str, ToolSpec]) -> LLMRequest:
    """The request the server gets: tools described, tool turns as text, the answer constrained.

    Unknown tool names fail with UnknownTool. A request without tools is returned as it is.
    """
    if not (request.tools or request.agent_tools):
        return request
    specs = _specs(request, registered)
    described = "\n".join(_describe(spec) for spec in specs)
    required = request.tool_choice == "required"
    forms = [_CALL % specs[0].name] + ([] if required else [_ANSWER])
    instructions = "\n".join(
        ["You can call tools. Reply with JSON only.", *forms, "Tools:", described]
    )
    messages = [_as_text(message) for message in request.messages]
    if messages and messages[0].role == "system":
        messages[0] = Message(role="system", content=f"{messages[0].content}\n\n{instructions}")
    else:
        messages.insert(0, Message(role="system", content=instructions))
    # model_copy: the stored request keeps no tools, so it validates when reloaded.
    return request.model_copy(
        update={
            "messages": messages,
            "tools": [],
            "agent_tools": [],
            "response_format": JSONSchemaFormat(
                name=FORMAT_NAME, json_schema=schema(specs, required=required)
            ),
        }
    )


def parse(request: LLMRequest, response: LLMResponse, key: str) -> LLMResponse:
    """The reply with the model's tool calls taken out of its JSON (a constrained request only).

    Call ids are derived from the syscall (`key`), so they are the same on every attempt and
    unique in the run. Output that is not the expected JSON (cut off by `max_tokens`, say) is
    left as the reply's text, except for the calls a reply cut off by `max_tokens` completed
    before the cut.
    """
    if request.response_format is None or request.response_format.name != FORMAT_NAME:
        return response
    try:
        parsed = json.loads(response.text)
    except ValueError:
        parsed = _complete_calls(response.text) if response.finish_reason == "length" else None
    if not isinstance(parsed, dict):
        return response
    if isinstance(parsed.get("answer"), str):
        return response.model_copy(update={"text": parsed["answer"]})
    calls = parsed.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return response
    prefix = hashlib.sha256(key.encode()).hexdigest()[:12]
    found = []
    for number, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return response
        try:
            found.append(
                ToolCall(
                    id=f"call-{prefix}-{number}",
                    name=call["name"],
                    arguments=json.dumps(call.get("arguments", {})),
                )
            )
        except ValidationError:  # a name no tool could have, or arguments over any limit
            return response
    return response.model_copy(update={"text": "", "tool_calls": found})


def _complete_calls(text: str) -> dict[str, Any] | None:
    """The calls that a cut-off `{"tool_calls": [...` reply finished, or None if none were."""
    opening = re.match(r'\s*\{\s*"tool_calls"\s*:\s*\[', text)
    if opening is None:
        return None
    decoder = json.JSONDecoder()
    position, found = opening.end(), []
    while True:
        position = len(text) - len(text[position:].lstrip(" \t\r\n,"))
        try:
            call, position = decoder.raw_decode(text, position)
        except ValueError:
            break
        found.append(call)
    return {"tool_calls": found} if found else None


def _describe(spec: ToolSpec) -> str:
    """A line a small context can afford: `- name(param: type, ...): description`.

    Then what each described parameter means, and the fields of nested types. The grammar
    enforces the full schema, so the prompt need not spell it out.
    """
    properties: dict[str, Any] = spec.parameters.get("properties", {})
    notes = "; ".join(
        f"{name}: {schema['description']}"
        for name, schema in properties.items()
        if isinstance(schema, dict) and isinstance(schema.get("description"), str)
    )
    types = "; ".join(
        f"{name} = {{{_fields(schema)}}}"
        for name, schema in spec.parameters.get("$defs", {}).items()
    )
    extra = "; ".join(part for part in (notes, types) if part)
    return f"- {spec.name}({_fields(spec.parameters)}): {spec.description}" + (
        f" ({extra})" if extra else ""
    )


def _fields(schema: Any) -> str:
    # An agent's tool schema is its own: anything of the wrong shape reads as "any".
    if not isinstance(schema, dict) or not isinstance(schema.get("properties", {}), dict):
        return ""
    listed = schema.get("required", [])
    required = {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()
    return ", ".join(
        f"{name}{'' if name in required else '?'}: {_type_name(field)}"
        for name, field in schema.get("properties", {}).items()
    )


def _type_name(schema: Any) -> str:
    if not isinstance(schema, dict):  # an agent's tool may say `true` for "anything"
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if isinstance(schema.get("anyOf"), list):
        return " | ".join(_type_name(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_type_name(schema.get('items', {}))}"
    return str(schema.get("type", "any"))


def _as_text(message: Message) -> Message:
    """Tool turns as plain turns: chat templates of models without tool support reject them."""
    if message.role == "tool":
        which = f" {message.tool_call_id}" if message.tool_call_id else ""
        return Message(role="user", content=f"Result of tool call{which}:\n{message.content}")
    if message.role == "assistant" and message.tool_calls and not message.content:
        calls = [
            {"name": call.name, "arguments": _loads(call.arguments)} for call in message.tool_calls
        ]
        return Message(role="assistant", content=json.dumps({"tool_calls": calls}))
    return Message(role=message.role, content=message.content)


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
