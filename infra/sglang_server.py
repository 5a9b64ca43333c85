"""Launching an SGLang server on a GPU host with the flags the kernel relies on.

Flags as SGLang 0.5 names them (its `arg_groups/fields`, read from the published wheel):
`--enable-priority-scheduling` with `--schedule-low-priority-values-first`, because the kernel
keeps Temporal's order (priority 1 runs first) and SGLang otherwise runs higher values first;
`--enable-metrics` for `kernos instances` (`sglang:num_running_reqs`, `sglang:num_queue_reqs`);
`--tool-call-parser auto` for tool calls; `--max-running-requests` at the instance's slots.
"""

from __future__ import annotations

import importlib.util
import sys

from kernos.kernel.errors import ConfigError


def launch_command(
    model_path: str,
    *,
    served_name: str,
    port: int,
    host: str = "127.0.0.1",
    max_running_requests: int | None = None,
    context_length: int | None = None,
    tool_call_parser: str = "auto",
) -> list[str]:
    """The `python -m sglang.launch_server ...` command line for one kernel LLM instance."""
    command = [
        sys.executable, "-m", "sglang.launch_server",
        "--model-path", model_path, "--served-model-name", served_name,
        "--host", host, "--port", str(port),
        "--enable-priority-scheduling", "--schedule-low-priority-values-first",
        "--enable-metrics", "--tool-call-parser", tool_call_parser,
    ]  # fmt: skip
    if max_running_requests is not None:
        command += ["--max-running-requests", str(max_running_requests)]
    if context_length is not None:
        command += ["--context-length", str(context_length)]
    return command


def require_sglang() -> None:
    """ConfigError unless SGLang is importable here."""
    if importlib.util.find_spec("sglang") is None:
        raise ConfigError(
            "SGLang is not installed here: on a GPU host, pip install 'kernos[sglang]'"
        )
