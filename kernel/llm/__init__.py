"""The LLM core: one backend per server kind, built from settings."""

from kernos.kernel.llm.base import LLMBackend, Placement, Progress, Snapshot
from kernos.kernel.llm.llamacpp import LlamaCppBackend
from kernos.kernel.llm.openai import OpenAIBackend
from kernos.kernel.llm.registry import build_backend
from kernos.kernel.llm.scripted import ScriptedBackend
from kernos.kernel.llm.sglang import SGLangBackend

__all__ = [
    "LLMBackend",
    "LlamaCppBackend",
    "OpenAIBackend",
    "Placement",
    "Progress",
    "SGLangBackend",
    "ScriptedBackend",
    "Snapshot",
    "build_backend",
]
