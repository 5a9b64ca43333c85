"""Workers as separate processes, configured through a kernos.toml, as operators run them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from kernos import Settings
from kernos.kernel.config import DatabaseSettings

ROOT = Path(__file__).resolve().parent.parent


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no TOML for {value!r}")


def to_toml(settings: Settings) -> str:
    """The settings as a kernos.toml, secrets included (tests only)."""
    data = settings.model_dump(mode="json", exclude_none=True)
    secrets = [("database", "dsn"), ("database", "owner_dsn"), ("database", "operator_dsn"),
               ("audit", "anchor_key"), ("temporal", "result_signing_key")]  # fmt: skip
    for section, field in secrets:
        secret = getattr(getattr(settings, section), field)
        if secret is not None:
            data[section][field] = secret.get_secret_value()
    lines: list[str] = []
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            continue
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append(f"\n[{key}]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    for instance in data["llm"]:
        lines.append("\n[[llm]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in instance.items()]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KERNOS_") or k == "KERNOS_STATE_DIR"
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


class WorkerProcess:
    """`kernos worker --kind KIND` in its own process."""

    def __init__(
        self,
        config: Path,
        kind: str,
        log: Path,
        module: str = "kernos.cli",
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.kind = kind
        self.log = log
        #: The CLI module to run: `kernos.cli`, or a test's wrapper of it.
        self.module = module
        #: What the command runs under (`ip netns exec NAME`: on another host).
        self.prefix = prefix
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, ready_timeout_s: float = 60.0) -> WorkerProcess:
        output = self.log.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.prefix, sys.executable, "-m", self.module, "--config", str(self.config),
            "worker", "--kind", self.kind,
            stdout=asyncio.subprocess.PIPE, stderr=output, env=environment(),
        )  # fmt: skip
        output.close()
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), ready_timeout_s)
        if b"polling" not in line:
            raise AssertionError(f"worker did not start: {line!r}; see {self.log}")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def write_worker_configs(settings: Settings, directory: Path) -> tuple[Path, Path]:
    """A kernel worker's kernos.toml, and an agent worker's with no DSN and no LLM servers."""
    kernel = directory / "kernos.toml"
    kernel.write_text(to_toml(settings))
    agent = directory / "agent.toml"
    agent.write_text(
        to_toml(settings.model_copy(update={"database": DatabaseSettings(), "llm": []}))
    )
    return kernel, agent
