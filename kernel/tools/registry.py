"""The tool manager's tools: typed Python functions with a JSON schema, limits and flags.

`@tool` turns a function into a `Tool`. Its parameters (pydantic types) become the JSON schema
the model sees and the validator every call passes; its docstring's first paragraph is the
description. A parameter annotated `ToolContext` is not the model's: the kernel fills it with
the caller (from its own record of the run), the call's idempotency key and the kernel's
stores. Tools run on kernel workers, one task queue per tool, at most `concurrency` at once.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from kernos.kernel.access import Subject
from kernos.kernel.errors import ConfigError, InvalidRequest, first_problem
from kernos.kernel.syscalls import ToolSpec

if typing.TYPE_CHECKING:
    from kernos.kernel.config import Settings
    from kernos.kernel.file_store import StorageStore


@dataclass(frozen=True)
class ToolContext:
    """What the kernel hands a tool that asks for it (a parameter annotated `ToolContext`)."""

    caller: Subject
    """The run the call is for, from the kernel's record, never from the model."""
    idempotency_key: str
    """The same for every attempt of one call: pass it to systems that deduplicate."""
    attempt: int
    settings: Settings
    storage: StorageStore | None = None


class RunnableTool(Protocol):
    """What a kernel worker runs as a tool: a `@tool` function, or an MCP server's tool."""

    name: str
    description: str
    timeout_s: float
    concurrency: int
    irreversible: bool
    idempotent: bool

    def spec(self) -> ToolSpec:
        """What the model is told about it."""
        ...

    def parse(self, arguments: str) -> Any:
        """The arguments, validated; ToolArgumentsInvalid names the first problem."""
        ...

    async def invoke(self, arguments: Any, context: ToolContext) -> str:
        """Run it within its timeout; its output as text."""
        ...


class ToolArgumentsInvalid(InvalidRequest):
    """Arguments that are not JSON, not an object, or do not fit the tool's parameters."""


class Tool:
    """A function the kernel can run for agents, with its schema, limits and flags."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float = 30.0,
        concurrency: int = 4,
        irreversible: bool = False,
        idempotent: bool = False,
    ) -> None:
        if timeout_s <= 0 or concurrency < 1:
            raise ConfigError(
                f"tool {function.__name__!r}: timeout_s must be > 0 and concurrency >= 1, "
                f"not {timeout_s} and {concurrency}"
            )
        self.function = function
        self.name = name or function.__name__
        self.description = description or _first_paragraph(function.__doc__) or self.name
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.irreversible = irreversible
        """Its effect cannot be undone: the kernel never runs an attempt twice, unless the
        tool is also `idempotent` (it passes the idempotency key on to what it acts on)."""
        self.idempotent = idempotent
        self.context_parameter, self.arguments_model = _arguments_model(function, self.name)

    def spec(self) -> ToolSpec:
        """The name, description and JSON schema of its parameters."""
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    def parse(self, arguments: str) -> BaseModel:
        """Validate JSON arguments; ToolArgumentsInvalid names the first problem."""
        try:
            return self.arguments_model.model_validate_json(arguments or "{}")
        except ValidationError as exc:
            raise ToolArgumentsInvalid(
                f"arguments of {self.name!r}: {first_problem(exc)}"
            ) from None

    async def invoke(self, arguments: BaseModel, context: ToolContext) -> str:
        """Run the function (a plain one in a thread) and return its result as text.

        A string is returned as it is, anything else as JSON. The timeout ends the wait; a
        plain function's thread cannot be stopped and finishes on its own.
        """
        values = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        if self.context_parameter is not None:
            values[self.context_parameter] = context
        if inspect.iscoroutinefunction(self.function):
            pending: Awaitable[Any] = self.function(**values)
        else:
            pending = asyncio.to_thread(self.function, **values)
        result = await asyncio.wait_for(pending, self.timeout_s)
        if isinstance(result, str):
            return result
        return pydantic_core.to_json(result).decode()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself (for tests and plain Python use)."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 30.0,
    concurrency: int = 4,
    irreversible: bool = False,
    idempotent: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 30.0,
    concurrency: int = 4,
    irreversible: bool = False,
    idempotent: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a typed function a tool: `@tool` or `@tool(timeout_s=5, irreversible=True)`."""

    def make(target: Callable[..., Any]) -> Tool:
        return Tool(
            target,
            name=name,
            description=description,
            timeout_s=timeout_s,
            concurrency=concurrency,
            irreversible=irreversible,
            idempotent=idempotent,
        )

    return make(function) if function is not None else make


#: Modules of kernos's own tools that have moved: settings written before still name them.
MOVED_MODULES = {"kernos.kernel.builtin_tools": "kernos.kernel.tools.builtin"}


def load_tools(paths: Mapping[str, str]) -> dict[str, Tool]:
    """Import each `name = "module:attribute"` and check it is a Tool of that name."""
    tools: dict[str, Tool] = {}
    for name, path in paths.items():
        module_name, _, attribute = path.partition(":")
        if not module_name or not attribute:
            raise ConfigError(f"tool path {path!r} is not of the form 'module:attribute'")
        module_name = MOVED_MODULES.get(module_name, module_name)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import tool module {module_name!r}: {exc}") from exc
        found = getattr(module, attribute, None)
        if not isinstance(found, Tool):
            raise ConfigError(f"{path!r} is not a tool: decorate the function with @kernos.tool")
        if found.name != name:
            raise ConfigError(
                f"tool {path!r} is named {found.name!r}; register it as {found.name!r} "
                f"or give @tool(name={name!r})"
            )
        tools[name] = found
    return tools


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split()) if doc else ""


def _arguments_model(function: Callable[..., Any], name: str) -> tuple[str | None, type[BaseModel]]:
    """The model of the function's parameters, and the name of its ToolContext one, if any."""
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except NameError as exc:
        raise ConfigError(f"tool {name!r}: cannot resolve a type annotation: {exc}") from exc
    context = None
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigError(f"tool {name!r}: *args and **kwargs have no schema")
        annotation = hints.get(parameter.name)
        if annotation is None:
            raise ConfigError(f"tool {name!r}: parameter {parameter.name!r} has no type")
        if annotation is ToolContext:
            context = parameter.name
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    return context, model
