"""The embedded stack: `kernos up`, `status` and `down`.

Temporal's dev server (SQLite file), PostgreSQL with pgvector (password authentication),
llama.cpp's server with the packaged model, and agent and kernel workers as separate processes,
all on this host, with state, pids and logs under the state directory (./.kernos).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel
from temporalio.client import Client

from kernos.infra.daemons import alive, spawn, stop
from kernos.infra.llama import MODEL_ALIAS, LlamaServer, health, local_model, slot_load
from kernos.infra.ports import port_in_use
from kernos.infra.postgres import (
    EmbeddedPostgres,
    listening_port,
    postmaster_pid,
    stop_cluster,
)
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import (
    CREDENTIALS_FILE,
    OPERATOR_FILE,
    STACK_FILE,
    Settings,
)
from kernos.kernel.db import upgrade
from kernos.kernel.errors import ConfigError
from kernos.kernel.result_seal import new_signing_key, public_hex, signing_key

COMPONENTS = ("postgres", "temporal", "llm", "kernel-worker", "agent-worker", "gateway")
_STATE = "stack.json"


class ComponentState(BaseModel):
    """What `up` started: enough to find it, check it and stop it."""

    name: str
    pid: int | None
    address: str
    log: str


class StackState(BaseModel):
    """`<state dir>/stack.json`."""

    components: dict[str, ComponentState] = {}


class ComponentStatus(BaseModel):
    """One line of `kernos status`."""

    name: str
    pid: int | None
    address: str
    healthy: bool
    log: str
    slots: int | None = None
    load: int | None = None
    """Slots generating right now (LLM server only)."""


#: What `status` says of a component that `up` never started.
_DOWN = ComponentStatus(name="", pid=None, address="", healthy=False, log="")


def _read_state(state: Path) -> StackState:
    path = state / _STATE
    if not path.is_file():
        return StackState()
    return StackState.model_validate_json(path.read_text())


def _write_state(state: Path, stack: StackState) -> None:
    (state / _STATE).write_text(stack.model_dump_json(indent=2))


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def _write_settings(
    state: Path, settings: Settings, temporal: str, ui: str, llm: str, postgres: EmbeddedPostgres
) -> None:
    credentials = state / CREDENTIALS_FILE
    # The keys outlive restarts: anchors signed before must still count, and runs in flight
    # replay the results signed before.
    anchor_key = _stored(credentials, "audit", "anchor_key") or secrets.token_hex(32)
    result_key = _stored(credentials, "temporal", "result_signing_key") or new_signing_key()
    stack = "\n".join(
        [
            "# Written by `kernos up`: where the embedded stack's services are. No secrets.",
            f"default_model = {_toml(MODEL_ALIAS)}",
            "",
            "[temporal]",
            f"address = {_toml(temporal)}",
            f"ui_url = {_toml(ui)}",
            "# What agent workers check kernel workers' results with (the key's public half).",
            f"result_check_key = {_toml(public_hex(signing_key(result_key)))}",
            "",
            "[[llm]]",
            'name = "local"',
            'kind = "llamacpp"',
            f"model = {_toml(MODEL_ALIAS)}",
            f"base_url = {_toml(llm)}",
            f"slots = {settings.embedded.llm_slots}",
            "",
            "[telemetry]",
            f"spans_file = {_toml(str(state / 'spans.jsonl'))}",
            "",
            "[audit]",
            f"anchor_sink = {_toml(str(state / 'audit' / 'anchors.jsonl'))}",
            "",
        ]
    )
    (state / STACK_FILE).write_text(stack)
    _write_secret(
        credentials,
        "# Written by `kernos up`: the kernel's credentials. Agent workers never read this.\n"
        f"[database]\ndsn = {_toml(postgres.dsn())}\n\n"
        f"[audit]\nanchor_key = {_toml(anchor_key)}\n\n"
        f"[temporal]\nresult_signing_key = {_toml(result_key)}\n",
    )
    _write_secret(
        state / OPERATOR_FILE,
        "# Written by `kernos up`: the operator's credential, for decisions over the record\n"
        "# (approvals, budgets, rules, API keys). No worker or gateway reads this.\n"
        f"[database]\noperator_dsn = {_toml(postgres.dsn(role='operator'))}\n",
    )


def _write_secret(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _stored(credentials: Path, section: str, name: str) -> str | None:
    import tomllib

    if not credentials.is_file():
        return None
    key = tomllib.loads(credentials.read_text()).get(section, {}).get(name)
    return key if isinstance(key, str) else None


async def _temporal_healthy(address: str) -> bool:
    try:
        await asyncio.wait_for(Client.connect(address), 5)
    except (RuntimeError, TimeoutError):
        return False
    return True


async def _postgres_healthy(dsn: str | None) -> bool:
    if dsn is None:
        return False
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=3)
    except psycopg.Error:
        return False
    await conn.close()
    return True


def _check_port(port: int, what: str, setting: str) -> None:
    if port_in_use(port):
        env = "KERNOS_" + setting.upper().replace(".", "__")
        raise ConfigError(
            f"port {port} for {what} is already in use (setting {setting}, {env}): "
            "stop what uses it or choose another port"
        )


#: What a worker or the gateway never gets, even if the operator's shell holds it.
WITHHELD = ("KERNOS_DATABASE__OWNER_DSN", "KERNOS_DATABASE__OPERATOR_DSN")


def child_environment(state: Path) -> dict[str, str]:
    """The environment of a process `up` starts: this one's, less the owner's and operator's."""
    env = {k: v for k, v in os.environ.items() if k not in WITHHELD}
    env["KERNOS_STATE_DIR"] = str(state)
    return env


async def _start_process(
    state: Path, name: str, command: list[str], ready: str, address: str, timeout_s: float = 60.0
) -> ComponentState:
    """Start `kernos <command>` on the stack's settings; up once its log says `ready`."""
    log = state / "logs" / f"{name}.log"
    env = child_environment(state)
    start_size = log.stat().st_size if log.exists() else 0
    args = [sys.executable, "-m", "kernos.cli", *command]
    process = await asyncio.to_thread(spawn, args, log, env)
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_bytes()[start_size:].decode(errors="replace")
        if ready in text:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process.pid)
            last = text.strip().splitlines()[-1:] or ["no output"]
            raise ConfigError(f"the {name} did not start: {last[0]} (log: {log})")
        await asyncio.sleep(0.1)
    return ComponentState(name=name, pid=process.pid, address=address, log=str(log))


async def up(settings: Settings, state: Path) -> list[ComponentStatus]:
    """Start what is not running; reuse what is. Idempotent."""
    state = state.resolve()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    stack = _read_state(state)
    embedded = settings.embedded
    running = {c.name: c for c in await status(state)}
    # Every port is checked before anything starts, so a clash leaves nothing half up.
    if not running.get("temporal", _DOWN).healthy:
        _check_port(embedded.temporal_port, "Temporal", "embedded.temporal_port")
        _check_port(embedded.ui_port, "the Temporal UI", "embedded.ui_port")
    if not running.get("llm", _DOWN).healthy:
        _check_port(embedded.llm_port, "the LLM server", "embedded.llm_port")
    if not running.get("gateway", _DOWN).healthy:
        _check_port(settings.gateway.port, "the gateway", "gateway.port")
    tcp_port = embedded.postgres_port
    if tcp_port is not None and listening_port(state / "postgres") != tcp_port:
        _check_port(tcp_port, "PostgreSQL", "embedded.postgres_port")

    postgres = EmbeddedPostgres.start(state / "postgres", keep_running=True)
    if tcp_port is not None:
        await asyncio.to_thread(postgres.listen_on_tcp, tcp_port)
    await upgrade(postgres.dsn(role="owner"))
    address = f"unix socket in {postgres.socket_dir}"
    if postgres.tcp_port is not None:
        address += f" and 127.0.0.1:{postgres.tcp_port}"
    stack.components["postgres"] = ComponentState(
        name="postgres",
        pid=postgres.pid,
        address=address,
        log=str(state / "postgres" / "log"),
    )
    _write_state(state, stack)

    temporal_address = f"127.0.0.1:{embedded.temporal_port}"
    ui_url = f"http://127.0.0.1:{embedded.ui_port}"
    if not running.get("temporal", _DOWN).healthy:
        temporal = await TemporalDevServer.start(
            port=embedded.temporal_port,
            ui_port=embedded.ui_port,
            db_file=state / "temporal.db",
            log_file=state / "logs" / "temporal.log",
        )
        stack.components["temporal"] = ComponentState(
            name="temporal",
            pid=temporal.process.pid,
            address=f"{temporal_address} (UI {ui_url})",
            log=str(state / "logs" / "temporal.log"),
        )
        _write_state(state, stack)

    llm_url = f"http://127.0.0.1:{embedded.llm_port}"
    if not running.get("llm", _DOWN).healthy:
        model = await asyncio.to_thread(local_model, state / "models")
        llama = await LlamaServer.start(
            model,
            port=embedded.llm_port,
            slots=embedded.llm_slots,
            context=embedded.llm_context,
            threads=embedded.llm_threads,
            log_file=state / "logs" / "llm.log",
        )
        stack.components["llm"] = ComponentState(
            name="llm", pid=llama.pid, address=llm_url, log=str(state / "logs" / "llm.log")
        )
    _write_settings(state, settings, temporal_address, ui_url, llm_url, postgres)
    _write_state(state, stack)

    for kind in ("kernel", "agent"):
        name = f"{kind}-worker"
        if not running.get(name, _DOWN).healthy:
            stack.components[name] = await _start_process(
                state, name, ["worker", "--kind", kind], "polling", f"{kind} worker"
            )
            _write_state(state, stack)
    if not running.get("gateway", _DOWN).healthy:
        gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
        stack.components["gateway"] = await _start_process(
            state, "gateway", ["gateway"], "Uvicorn running", gateway
        )
        _write_state(state, stack)
    return await status(state)


async def status(state: Path) -> list[ComponentStatus]:
    """Each component's health, address and pid; the LLM server's slots and load."""
    state = state.resolve()
    stack = _read_state(state)
    dsn = None
    credentials = state / CREDENTIALS_FILE
    if credentials.is_file():
        import tomllib

        dsn = tomllib.loads(credentials.read_text()).get("database", {}).get("dsn")
    result = []
    for name in COMPONENTS:
        component = stack.components.get(name)
        if component is None:
            result.append(ComponentStatus(name=name, pid=None, address="", healthy=False, log=""))
            continue
        pid = postmaster_pid(state / "postgres") if name == "postgres" else component.pid
        healthy = alive(pid)
        entry = ComponentStatus(
            name=name, pid=pid, address=component.address, healthy=healthy, log=component.log
        )
        if healthy and name == "postgres":
            entry.healthy = await _postgres_healthy(dsn)
        elif healthy and name == "temporal":
            entry.healthy = await _temporal_healthy(component.address.split(" ")[0])
        elif healthy and name == "llm":
            entry.healthy = await health(component.address)
            load = await slot_load(component.address)
            if load is not None:
                entry.slots, entry.load = load.slots, load.busy
        result.append(entry)
    return result


def down(state: Path) -> list[str]:
    """Stop, by pid, what `up` started; return the names of what was stopped."""
    state = state.resolve()
    stack = _read_state(state)
    stopped = []
    for name in reversed(COMPONENTS):
        component = stack.components.get(name)
        if component is None:
            continue
        if name == "postgres":
            if stop_cluster(state / "postgres"):
                stopped.append(name)
        elif component.pid is not None and alive(component.pid):
            stop(component.pid)
            stopped.append(name)
        del stack.components[name]
    _write_state(state, stack)
    return stopped
