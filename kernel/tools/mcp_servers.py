"""Tools from MCP servers: one stdio session per server in each kernel worker, shared by calls.

A server's tools are listed when the worker starts and offered like `@tool` functions, named
`<server>__<tool>`, under the same policies (`tool:<server>__<tool>`), the same ledger and the
same limits. Their flags come from the server's annotations, with MCP's defaults: a tool that
does not say it is read-only or non-destructive is treated as irreversible (run once per call).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from contextlib import AsyncExitStack
from typing import Any

import jsonschema
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client

from kernos.kernel.config import MCPServerSettings
from kernos.kernel.errors import ConfigError, MCPToolError
from kernos.kernel.syscalls import ToolSpec
from kernos.kernel.tools import ToolArgumentsInvalid, ToolContext

log = logging.getLogger(__name__)
SEPARATOR = "__"
_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class MCPTool:
    """One tool of an MCP server, called through the worker's session with it."""

    def __init__(
        self, server: str, tool: types.Tool, session: ClientSession, settings: MCPServerSettings
    ) -> None:
        self.server = server
        self.remote_name = tool.name
        self.name = f"{server}{SEPARATOR}{tool.name}"
        self.description = tool.description or tool.title or tool.name
        self.parameters: dict[str, Any] = dict(tool.input_schema or {"type": "object"})
        self.timeout_s = settings.timeout_s
        self.concurrency = settings.concurrency
        hints = tool.annotations or types.ToolAnnotations()
        read_only = bool(hints.read_only_hint)
        self.irreversible = not read_only and hints.destructive_hint is not False
        self.idempotent = read_only or bool(hints.idempotent_hint)
        self._session = session

    def spec(self) -> ToolSpec:
        """The server's description and input schema."""
        schema = {k: v for k, v in self.parameters.items() if k != "title"}
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    def parse(self, arguments: str) -> dict[str, Any]:
        """JSON arguments checked against the server's input schema."""
        try:
            value = json.loads(arguments or "{}")
        except ValueError as exc:
            raise ToolArgumentsInvalid(f"arguments of {self.name!r}: not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ToolArgumentsInvalid(f"arguments of {self.name!r}: not a JSON object")
        try:
            jsonschema.validate(value, self.parameters)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(part) for part in exc.absolute_path)
            raise ToolArgumentsInvalid(
                f"arguments of {self.name!r}: {where + ': ' if where else ''}{exc.message}"
            ) from None
        except jsonschema.SchemaError as exc:
            problem = f"{self.name!r} has an invalid schema: {exc.message}"
            raise ToolArgumentsInvalid(problem) from None
        return value

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        """Call the tool on the server; its content as text (structured content as JSON)."""
        result = await asyncio.wait_for(
            self._session.call_tool(self.remote_name, arguments), self.timeout_s
        )
        if not isinstance(result, types.CallToolResult):
            raise MCPToolError(f"{self.name!r} answered {type(result).__name__}, not a result")
        text = "\n".join(
            item.text if isinstance(item, types.TextContent) else item.model_dump_json()
            for item in result.content
        )
        if result.is_error:
            raise MCPToolError(text or f"{self.name!r} failed")
        if not text and result.structured_content is not None:
            return json.dumps(result.structured_content)
        return text


class MCPServers:
    """The worker's sessions with its configured MCP servers, and their tools."""

    def __init__(self, stack: AsyncExitStack, tools: dict[str, MCPTool]) -> None:
        self._stack = stack
        self.tools = tools

    @classmethod
    async def open(cls, servers: dict[str, MCPServerSettings]) -> MCPServers:
        """Start each server, initialise its session and list its tools.

        A server that cannot be started fails with ConfigError naming it.
        """
        stack = AsyncExitStack()
        tools: dict[str, MCPTool] = {}
        try:
            for name, settings in servers.items():
                parameters = StdioServerParameters(
                    command=settings.command, args=settings.args, env=settings.env
                )
                try:
                    read, write = await stack.enter_async_context(stdio_client(parameters))
                    session = await stack.enter_async_context(ClientSession(read, write))
                    await asyncio.wait_for(session.initialize(), settings.timeout_s)
                    listed = await asyncio.wait_for(session.list_tools(), settings.timeout_s)
                except (OSError, TimeoutError) as exc:
                    raise ConfigError(
                        f"MCP server {name!r} ({settings.command}) did not start: {exc!r}"
                    ) from exc
                for tool in listed.tools:
                    if not _TOOL_NAME.match(f"{name}{SEPARATOR}{tool.name}"):
                        log.warning(
                            "MCP server %s: tool %r has no valid name; skipped", name, tool.name
                        )
                        continue
                    found = MCPTool(name, tool, session, settings)
                    tools[found.name] = found
        except BaseException:
            await stack.aclose()
            raise
        return cls(stack, tools)

    async def aclose(self) -> None:
        """End the sessions and the servers."""
        await self._stack.aclose()
