"""kernos: a durable operating-system kernel for LLM agents.

Agent authors subclass `Agent`; client code submits runs with `KernosClient` on the kernel's
side, or with `RemoteClient` through the gateway, holding an API key only.

Each name is imported when first used: a pool's child, which needs `Agent` only, does not pay
for the client, the gateway's client or the policy store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernos.agent import (
        LLM,
        Agent,
        Conversations,
        Done,
        Memory,
        StepAgent,
        Storage,
        ToolLoopResult,
        Tools,
    )
    from kernos.client import KernosClient, RunFailed, RunHandle, RunView, TenantUsage
    from kernos.kernel.config import LLMInstance, Settings, load_settings
    from kernos.kernel.errors import (
        AccessDenied,
        ApprovalRequired,
        ConfigError,
        ContextTooLong,
        EmbeddingMismatch,
        InvalidPath,
        InvalidRequest,
        InvalidRunSpec,
        KernosError,
        KernosWarning,
        LLMBadRequest,
        LLMError,
        LLMRateLimited,
        LLMUnavailable,
        NotFound,
        PayloadTooLarge,
        PolicyError,
        RunNotFound,
        TokenBudgetExceeded,
        ToolOutcomeUnknown,
        UnknownAgent,
        UnknownModel,
        UnknownTool,
        VersionConflict,
    )
    from kernos.kernel.llm.scripted import ScriptedBackend
    from kernos.kernel.syscalls import (
        ConversationRef,
        FileContent,
        FileHit,
        FileInfo,
        FileVersion,
        JSONSchemaFormat,
        LLMRequest,
        LLMResponse,
        MemoryAdd,
        MemoryAdded,
        MemoryItem,
        Message,
        RunResult,
        RunSpec,
        Sampling,
        TokenUsage,
        ToolCall,
        ToolResult,
    )
    from kernos.kernel.tools import Tool, ToolContext, tool
    from kernos.remote import GatewayError, RemoteClient

#: Each public name -> the module that defines it.
_HOMES = {
    "LLM": "kernos.agent",
    "Agent": "kernos.agent",
    "Conversations": "kernos.agent",
    "Done": "kernos.agent",
    "Memory": "kernos.agent",
    "StepAgent": "kernos.agent",
    "Storage": "kernos.agent",
    "ToolLoopResult": "kernos.agent",
    "Tools": "kernos.agent",
    "KernosClient": "kernos.client",
    "RunFailed": "kernos.client",
    "RunHandle": "kernos.client",
    "RunView": "kernos.client",
    "TenantUsage": "kernos.client",
    "LLMInstance": "kernos.kernel.config",
    "Settings": "kernos.kernel.config",
    "load_settings": "kernos.kernel.config",
    "AccessDenied": "kernos.kernel.errors",
    "ApprovalRequired": "kernos.kernel.errors",
    "ConfigError": "kernos.kernel.errors",
    "ContextTooLong": "kernos.kernel.errors",
    "EmbeddingMismatch": "kernos.kernel.errors",
    "InvalidPath": "kernos.kernel.errors",
    "InvalidRequest": "kernos.kernel.errors",
    "InvalidRunSpec": "kernos.kernel.errors",
    "KernosError": "kernos.kernel.errors",
    "KernosWarning": "kernos.kernel.errors",
    "LLMBadRequest": "kernos.kernel.errors",
    "LLMError": "kernos.kernel.errors",
    "LLMRateLimited": "kernos.kernel.errors",
    "LLMUnavailable": "kernos.kernel.errors",
    "NotFound": "kernos.kernel.errors",
    "PayloadTooLarge": "kernos.kernel.errors",
    "PolicyError": "kernos.kernel.errors",
    "RunNotFound": "kernos.kernel.errors",
    "TokenBudgetExceeded": "kernos.kernel.errors",
    "ToolOutcomeUnknown": "kernos.kernel.errors",
    "UnknownAgent": "kernos.kernel.errors",
    "UnknownModel": "kernos.kernel.errors",
    "UnknownTool": "kernos.kernel.errors",
    "VersionConflict": "kernos.kernel.errors",
    "ScriptedBackend": "kernos.kernel.llm.scripted",
    "ConversationRef": "kernos.kernel.syscalls",
    "FileContent": "kernos.kernel.syscalls",
    "FileHit": "kernos.kernel.syscalls",
    "FileInfo": "kernos.kernel.syscalls",
    "FileVersion": "kernos.kernel.syscalls",
    "JSONSchemaFormat": "kernos.kernel.syscalls",
    "MemoryAdd": "kernos.kernel.syscalls",
    "MemoryAdded": "kernos.kernel.syscalls",
    "LLMRequest": "kernos.kernel.syscalls",
    "LLMResponse": "kernos.kernel.syscalls",
    "MemoryItem": "kernos.kernel.syscalls",
    "Message": "kernos.kernel.syscalls",
    "RunResult": "kernos.kernel.syscalls",
    "RunSpec": "kernos.kernel.syscalls",
    "Sampling": "kernos.kernel.syscalls",
    "TokenUsage": "kernos.kernel.syscalls",
    "ToolCall": "kernos.kernel.syscalls",
    "ToolResult": "kernos.kernel.syscalls",
    "Tool": "kernos.kernel.tools",
    "ToolContext": "kernos.kernel.tools",
    "tool": "kernos.kernel.tools",
    "GatewayError": "kernos.remote",
    "RemoteClient": "kernos.remote",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'kernos' has no attribute {name!r}")
    # Through `__import__`, which Temporal's workflow sandbox hooks, so that the module is
    # passed through to agent code rather than loaded again inside a run's sandbox.
    value = getattr(__import__(home, fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "LLM",
    "AccessDenied",
    "Agent",
    "ApprovalRequired",
    "ConfigError",
    "ContextTooLong",
    "ConversationRef",
    "Conversations",
    "Done",
    "EmbeddingMismatch",
    "FileContent",
    "FileHit",
    "FileInfo",
    "FileVersion",
    "GatewayError",
    "InvalidPath",
    "InvalidRequest",
    "InvalidRunSpec",
    "JSONSchemaFormat",
    "KernosClient",
    "KernosError",
    "KernosWarning",
    "LLMBadRequest",
    "LLMError",
    "LLMInstance",
    "LLMRateLimited",
    "LLMRequest",
    "LLMResponse",
    "LLMUnavailable",
    "Memory",
    "MemoryAdd",
    "MemoryAdded",
    "MemoryItem",
    "Message",
    "NotFound",
    "PayloadTooLarge",
    "PolicyError",
    "RemoteClient",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunResult",
    "RunSpec",
    "RunView",
    "Sampling",
    "ScriptedBackend",
    "Settings",
    "StepAgent",
    "Storage",
    "TenantUsage",
    "TokenBudgetExceeded",
    "TokenUsage",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolLoopResult",
    "ToolOutcomeUnknown",
    "ToolResult",
    "Tools",
    "UnknownAgent",
    "UnknownModel",
    "UnknownTool",
    "VersionConflict",
    "load_settings",
    "tool",
]
