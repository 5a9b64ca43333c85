"""kernos: a durable operating-system kernel for LLM agents.

Agent authors subclass `Agent`; client code submits runs with `KernosClient`.
"""

from kernos.agent import LLM, Agent, Conversations, Done, StepAgent
from kernos.client import KernosClient, RunFailed, RunHandle, RunView, TenantUsage
from kernos.kernel.config import LLMInstance, Settings, load_settings
from kernos.kernel.errors import (
    AccessDenied,
    ConfigError,
    ContextTooLong,
    InvalidRequest,
    InvalidRunSpec,
    KernosError,
    KernosWarning,
    LLMBadRequest,
    LLMError,
    LLMRateLimited,
    LLMUnavailable,
    PayloadTooLarge,
    PolicyError,
    RunNotFound,
    TokenBudgetExceeded,
    UnknownAgent,
    UnknownModel,
)
from kernos.kernel.llm.scripted import ScriptedBackend
from kernos.kernel.syscalls import (
    ConversationRef,
    LLMRequest,
    LLMResponse,
    Message,
    RunResult,
    RunSpec,
    Sampling,
    TokenUsage,
)

__all__ = [
    "LLM",
    "AccessDenied",
    "Agent",
    "ConfigError",
    "ContextTooLong",
    "ConversationRef",
    "Conversations",
    "Done",
    "InvalidRequest",
    "InvalidRunSpec",
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
    "Message",
    "PayloadTooLarge",
    "PolicyError",
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
    "TenantUsage",
    "TokenBudgetExceeded",
    "TokenUsage",
    "UnknownAgent",
    "UnknownModel",
    "load_settings",
]
