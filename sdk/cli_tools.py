"""`kernos tools`: the tools this kernel registers, as models see them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kernos.cli_output import print_json

if TYPE_CHECKING:
    from kernos.kernel.config import Settings
    from kernos.kernel.tools import RunnableTool


def add_tools_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `tools` command."""
    tools = commands.add_parser("tools", help="registered tools: schema, limits and flags")
    tools.add_argument("--json", action="store_true", help="with each tool's JSON schema")
    tools.set_defaults(handler=cmd_tools)


async def cmd_tools(settings: Settings, args: argparse.Namespace) -> int:
    """List the registered tools and MCP servers' tools (a bad registration is named here)."""
    from kernos.kernel.tools import load_tools
    from kernos.kernel.tools.mcp_servers import MCPServers

    tools: dict[str, RunnableTool] = dict(load_tools(settings.tools.registry))
    servers = await MCPServers.open(settings.tools.mcp) if settings.tools.mcp else None
    if servers is not None:
        tools |= servers.tools
        await servers.aclose()
    if args.json:
        print_json(
            [
                {
                    **tool.spec().model_dump(),
                    "queue": f"{settings.tools.queue_prefix}{name}",
                    "timeout_s": tool.timeout_s,
                    "concurrency": tool.concurrency,
                    "irreversible": tool.irreversible,
                    "idempotent": tool.idempotent,
                }
                for name, tool in tools.items()
            ]
        )
        return 0
    print(f"{'TOOL':<16}{'TIMEOUT':>8}{'SLOTS':>7}  {'FLAGS':<24}DESCRIPTION")
    for name, tool in tools.items():
        marked = [("irreversible", tool.irreversible), ("idempotent", tool.idempotent)]
        flags = ",".join(flag for flag, on in marked if on)
        print(
            f"{name:<16}{tool.timeout_s:>7g}s{tool.concurrency:>7}  {flags:<24}{tool.description}"
        )
    return 0
