"""The tool manager: every tool concern in one package.

- `registry`: `@tool` functions as typed tools, and loading them from settings (re-exported here)
- `builtin`: the tools every kernel registers unless settings say otherwise
- `mcp_servers`: tools served by MCP servers, called like `@tool` functions
- `calling`: tools offered to a model as constrained JSON, and its calls parsed back
- `ledger`: each call's arguments and outcome, recorded once per syscall

The `tool.call` activity that runs them is `kernos.activities.tools`; its request and result
types are `kernos.kernel.syscalls.tool_calls`. Only `registry` is imported here: agents'
workflow code imports this package, and must not load the kernel's side of it.
"""

from kernos.kernel.tools.registry import (
    RunnableTool,
    Tool,
    ToolArgumentsInvalid,
    ToolContext,
    load_tools,
    tool,
)

__all__ = ["RunnableTool", "Tool", "ToolArgumentsInvalid", "ToolContext", "load_tools", "tool"]
