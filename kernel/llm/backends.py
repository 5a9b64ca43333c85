"""Builds a backend for each configured LLM instance."""

from __future__ import annotations

from kernos.kernel.config import LLMInstance
from kernos.kernel.errors import ConfigError
from kernos.kernel.llm.base import LLMBackend
from kernos.kernel.llm.llamacpp import LlamaCppBackend
from kernos.kernel.llm.openai import OpenAIBackend
from kernos.kernel.llm.scripted import ScriptedBackend
from kernos.kernel.llm.sglang import SGLangBackend


def build_backend(instance: LLMInstance) -> LLMBackend:
    """The backend that serves `instance`, by its kind."""
    if instance.kind == "scripted":
        return ScriptedBackend(instance.script, context_window=instance.context_window)
    if instance.base_url is None:
        raise ConfigError(
            f"LLM instance {instance.name!r} of kind {instance.kind} needs a base_url"
        )
    api_key = instance.api_key.get_secret_value() if instance.api_key else None
    if instance.kind == "sglang":
        return SGLangBackend(
            instance.name,
            instance.base_url,
            api_key=api_key,
            priority_scheduling=instance.priority_scheduling,
            tool_call_parser=instance.tool_call_parser,
        )
    if instance.kind == "llamacpp":
        return LlamaCppBackend(
            instance.name, instance.base_url, api_key=api_key, turn_markers=instance.turn_markers
        )
    return OpenAIBackend(
        instance.name,
        instance.base_url,
        api_key=api_key,
        context_window=instance.context_window,
        text_resume=instance.text_resume,
    )
