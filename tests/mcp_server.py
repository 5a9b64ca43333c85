"""An MCP server for the tests, over stdio: `python -m tests.mcp_server`."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("kernos-test")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def delete_everything(confirm: bool) -> str:
    """Delete everything (no annotations: MCP's defaults make it destructive)."""
    return "gone" if confirm else "kept"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def fail() -> str:
    """Fail, as a server's tool does."""
    raise ValueError("the server's tool failed")


if __name__ == "__main__":
    server.run()
