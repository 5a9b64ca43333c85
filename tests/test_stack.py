"""`kernos up` / `status` / `down` in a temporary directory, as a newcomer runs them."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tomllib
from pathlib import Path

import psycopg
import pytest

from kernos.infra.daemons import alive, kill
from kernos.infra.ports import free_port
from kernos.kernel.result_seal import public_hex, signing_key
from tests.processes import environment
from tests.waiting import eventually


async def kernos(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kernos.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def stack_env(tmp_path: Path) -> dict[str, str]:
    env = environment()
    env["KERNOS_STATE_DIR"] = str(tmp_path / ".kernos")
    env["KERNOS_CONFIG"] = str(tmp_path / "kernos.toml")  # absent: the stack's files only
    env["KERNOS_EMBEDDED__TEMPORAL_PORT"] = str(free_port())
    env["KERNOS_EMBEDDED__UI_PORT"] = str(free_port())
    env["KERNOS_EMBEDDED__LLM_PORT"] = str(free_port())
    env["KERNOS_EMBEDDED__LLM_SLOTS"] = "2"
    env["KERNOS_EMBEDDED__LLM_CONTEXT"] = "2048"
    env["KERNOS_EMBEDDED__POSTGRES_PORT"] = str(free_port())
    env["KERNOS_GATEWAY__PORT"] = str(free_port())
    return env


@pytest.mark.servers  # (starts its own)
async def test_up_status_run_crash_down(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    code, out, err = await kernos(tmp_path, env, "up", "--json")
    try:
        assert code == 0, err + out
        components = {c["name"]: c for c in json.loads(out)["components"]}
        assert set(components) == {
            "postgres", "temporal", "llm", "kernel-worker", "agent-worker", "gateway",
        }  # fmt: skip
        assert all(c["healthy"] and c["pid"] for c in components.values()), components
        assert components["llm"]["slots"] == 2
        assert components["llm"]["load"] == 0

        kernel_toml = tmp_path / ".kernos" / "kernel.toml"
        anchor_key = tomllib.loads(kernel_toml.read_text())["audit"]["anchor_key"]
        first_result_key = tomllib.loads(kernel_toml.read_text())["temporal"]["result_signing_key"]
        # A second `up` reuses everything, the anchor key too (earlier anchors still count).
        code, out, err = await kernos(tmp_path, env, "up", "--json")
        assert code == 0, err
        again = {c["name"]: c["pid"] for c in json.loads(out)["components"]}
        assert again == {name: c["pid"] for name, c in components.items()}
        assert tomllib.loads(kernel_toml.read_text())["audit"]["anchor_key"] == anchor_key
        # Kernel workers sign results with a key only they hold, kept across restarts (runs in
        # flight replay the results signed before); agent workers check with its public half.
        result_key = tomllib.loads(kernel_toml.read_text())["temporal"]["result_signing_key"]
        assert result_key == first_result_key
        stack_toml = tomllib.loads((tmp_path / ".kernos" / "stack.toml").read_text())
        assert stack_toml["temporal"]["result_check_key"] == public_hex(signing_key(result_key))
        # No superuser's password is on disk; the owner's is not in the workers' settings.
        stored = json.loads((tmp_path / ".kernos" / "postgres.credentials.json").read_text())
        assert set(stored) == {"owner_password", "kernel_password", "operator_password"}
        assert stored["owner_password"] not in kernel_toml.read_text()
        # The operator's credential is in its own file, which only the operator's commands read.
        operator_toml = tmp_path / ".kernos" / "operator.toml"
        assert operator_toml.stat().st_mode & 0o077 == 0
        assert stored["operator_password"] in operator_toml.read_text()
        assert stored["operator_password"] not in kernel_toml.read_text()
        code, out, err = await kernos(tmp_path, env, "budget", "set", "stack-test", "1000")
        assert code == 0, err

        # PostgreSQL also listens on its TCP port, with passwords only.
        port = env["KERNOS_EMBEDDED__POSTGRES_PORT"]
        assert f"127.0.0.1:{port}" in components["postgres"]["address"]
        kernel_dsn = tomllib.loads((tmp_path / ".kernos" / "kernel.toml").read_text())
        password = kernel_dsn["database"]["dsn"].split(":")[2].split("@")[0]
        async with await psycopg.AsyncConnection.connect(
            f"postgresql://kernos:{password}@127.0.0.1:{port}/kernos"
        ) as conn:
            cursor = await conn.execute("SELECT count(*) FROM runs")
            assert await cursor.fetchone() == (0,)
        with pytest.raises(psycopg.OperationalError, match="password"):
            await psycopg.AsyncConnection.connect(f"postgresql://kernos@127.0.0.1:{port}/kernos")

        # The agent worker never got the kernel's credentials.
        agent_log = Path(components["agent-worker"]["log"]).read_text()
        assert "DSN" not in agent_log
        credentials = tmp_path / ".kernos" / "kernel.toml"
        assert credentials.stat().st_mode & 0o077 == 0

        # A run starts; the Temporal server is killed under it and brought back by `up`.
        code, out, err = await kernos(
            tmp_path, env, "run", "planner", "Name a fruit.", "--no-wait", "--json"
        )
        assert code == 0, err
        run_id = json.loads(out)["run_id"]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(kill, components["temporal"]["pid"])
        code, out, err = await kernos(tmp_path, env, "up", "--json")
        assert code == 0, err
        code, out, err = await eventually(
            lambda: kernos(tmp_path, env, "show", run_id, "--json"),
            lambda shown: shown[0] == 0 and json.loads(shown[1])["status"] == "completed",
            what="the run completed", timeout_s=180, every_s=1.0,
        )  # fmt: skip
        shown = json.loads(out)
        assert shown["output"].strip()
        assert shown["output_tokens"] > 0

        # A client with an API key and the gateway's URL, and no settings or credentials.
        code, token, err = await kernos(
            tmp_path, env, "keys", "create", "--user", "erin", "--tenant", "team"
        )
        assert code == 0, err
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        client_env = {
            **environment(),
            "KERNOS_STATE_DIR": str(elsewhere / ".kernos"),
            "KERNOS_CONFIG": str(elsewhere / "kernos.toml"),
            "KERNOS_GATEWAY_URL": components["gateway"]["address"],
            "KERNOS_API_KEY": token.strip(),
        }
        code, out, err = await kernos(elsewhere, client_env, "run", "planner", "A fruit?", "--json")
        assert code == 0, err
        through = json.loads(out)
        assert through["status"] == "completed" and through["syscalls"] > 0
        code, out, err = await kernos(tmp_path, env, "show", through["run_id"], "--json")
        assert code == 0, err
        assert (json.loads(out)["tenant"], json.loads(out)["user"]) == ("team", "erin")

        code, out, _ = await kernos(tmp_path, env, "logs", "llm", "--lines", "5")
        assert code == 0
        assert out.strip()
    finally:
        code, out, err = await kernos(tmp_path, env, "down")
    assert code == 0, err
    assert "stopped:" in out
    code, out, _ = await kernos(tmp_path, env, "status", "--json")
    assert code == 3
    after = json.loads(out)["components"]
    assert not any(c["healthy"] for c in after)
    pids = [c["pid"] for c in components.values()]
    assert not any(alive(pid) for pid in pids)


async def test_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["KERNOS_EMBEDDED__TEMPORAL_PORT"])))
        taken.listen()
        code, _, err = await kernos(tmp_path, env, "up")
    assert code == 1
    assert err.startswith(f"kernos: error: port {env['KERNOS_EMBEDDED__TEMPORAL_PORT']} for")
    assert "embedded.temporal_port" in err
    assert "KERNOS_EMBEDDED__TEMPORAL_PORT" in err
    assert not (tmp_path / ".kernos" / "postgres").exists()
