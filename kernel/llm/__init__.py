"""The LLM core: one backend per server kind, built from settings."""

from kernos.kernel.llm.base import LLMBackend, Progress, Snapshot
from kernos.kernel.llm.llamacpp import LlamaCppBackend
from kernos.kernel.llm.openai import OpenAIBackend
from kernos.kernel.llm.registry import build_backend
from kernos.kernel.llm.scripted import ScriptedBackend

__all__ = [
    "LLMBackend",
    "LlamaCppBackend",
    "OpenAIBackend",
    "Progress",
    "ScriptedBackend",
    "Snapshot",
    "build_backend",
]
