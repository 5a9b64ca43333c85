"""The `kernos` command as an operator uses it: one-line errors, JSON listings."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from kernos import KernosClient, RunSpec, Settings
from kernos.infra.postgres import EmbeddedPostgres
from tests.conftest import workers
from tests.processes import environment, to_toml


async def kernos(config: Path | None, *args: str) -> tuple[int, str, str]:
    prefix = ["--config", str(config)] if config else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kernos.cli", *prefix, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def config_file(settings: Settings, tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "kernos.toml"
    path.write_text(to_toml(settings.model_copy(update=changes)))
    return path


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 1
    assert err.count("\n") == 1, err
    assert err.startswith("kernos: error: ")
    assert message in err
    assert "Traceback" not in err


async def test_run_ps_show(settings: Settings, tmp_path: Path) -> None:
    config = config_file(settings, tmp_path)
    async with workers(settings):
        code, out, err = await kernos(config, "run", "echo", "hello there", "--json")
        assert code == 0, err
        done = json.loads(out)
        assert done["status"] == "completed"
        assert done["output"] == "scripted reply 1 to: hello there"
        assert done["usage"]["output_tokens"] == 6
        base = f"{settings.temporal.ui_url}/namespaces/default/workflows/{done['run_id']}/"
        assert done["ui_url"].startswith(base)
        assert done["ui_url"].endswith("/history")

        code, out, err = await kernos(
            config, "run", "planner", "plan it", "--tenant", "acme", "--priority", "1",
            "--no-wait", "--json",
        )  # fmt: skip
        assert code == 0, err
        run_id = json.loads(out)["run_id"]
        await settings_client_wait(settings, run_id)

    code, out, _ = await kernos(config, "ps", "--json")
    assert code == 0
    runs = {run["run_id"]: run for run in json.loads(out)["runs"]}
    assert runs[done["run_id"]]["status"] == "completed"
    assert runs[run_id]["tenant"] == "acme"
    assert runs[run_id]["priority"] == 1

    code, out, _ = await kernos(config, "show", run_id, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "completed"
    assert f"/namespaces/default/workflows/{run_id}/" in shown["ui_url"]
    assert shown["ui_url"].endswith("/history")
    assert [(s["syscall"], s["decision"], s["outcome"]) for s in shown["syscalls"]] == [
        ("llm.chat", "allow", "ok"),
        ("llm.chat", "allow", "ok"),
        ("run.end", "allow", None),
    ]
    code, out, _ = await kernos(config, "show", run_id)
    assert code == 0
    assert "llm:scripted" in out
    assert "status:       completed" in out


async def settings_client_wait(settings: Settings, run_id: str) -> None:
    from kernos import KernosClient

    async with await KernosClient.connect(settings) as client:
        await client.handle(run_id).result()


async def test_errors_are_one_line(settings: Settings, tmp_path: Path) -> None:
    config = config_file(settings, tmp_path)
    cases = [
        (("show", "run-nope"), "no run with id 'run-nope'"),
        (("cancel", "run-nope"), "no run with id 'run-nope'"),
        (("run", "nobody", "x"), "unknown agent 'nobody'; registered agents: buggy, catcher, "),
        (("run", "echo", "x", "--priority", "9"), "priority: Input should be less than or"),
        (("run", "echo", " "), "task: task is empty"),
        (("run", "echo", "x", "--tenant", "../x"), "tenant '../x' is not a valid name"),
    ]
    for args, message in cases:
        code, _, err = await kernos(config, *args)
        assert_one_line_error(code, err, message)

    code, _, err = await kernos(tmp_path / "missing.toml", "ps")
    assert_one_line_error(code, err, "missing.toml' does not exist")

    code, _, err = await kernos(config, "run", "echo", "x", "--priority", "high")
    assert code == 2
    assert "invalid int value: 'high'" in err


async def test_unreachable_services_are_named(settings: Settings, tmp_path: Path) -> None:
    assert settings.database.dsn is not None
    wrong = settings.database.dsn.get_secret_value().replace("kernos:", "kernos:x", 1)
    config = config_file(
        settings, tmp_path, database=settings.database.model_copy(update={"dsn": SecretStr(wrong)})
    )
    code, _, err = await kernos(config, "ps")
    assert_one_line_error(code, err, "cannot connect to PostgreSQL ([database] dsn): ")
    assert "password authentication failed" in err
    assert wrong.split(":")[2].split("@")[0] not in err  # the password it was given

    config = config_file(
        settings,
        tmp_path,
        temporal=settings.temporal.model_copy(update={"address": "127.0.0.1:1"}),
    )
    code, _, err = await kernos(config, "ps")
    assert_one_line_error(code, err, "cannot reach Temporal at 127.0.0.1:1")


async def test_config_masks_secrets(settings: Settings, tmp_path: Path) -> None:
    config = config_file(settings, tmp_path)
    code, out, _ = await kernos(config, "config")
    assert code == 0
    shown = json.loads(out)
    assert settings.database.dsn is not None
    password = settings.database.dsn.get_secret_value().split(":")[2].split("@")[0]
    assert password not in out
    assert ":********@" in shown["database"]["dsn"]
    assert shown["temporal"]["address"] == settings.temporal.address


async def test_db_upgrade_runs_as_the_owner_and_is_idempotent(
    settings: Settings, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    code, _, err = await kernos(config_file(settings, tmp_path), "db", "upgrade")
    assert_one_line_error(code, err, "migrations run as the schema's owner role: set [database]")
    owner = settings.database.model_copy(
        update={"owner_dsn": SecretStr(postgres.dsn(role="owner"))}
    )
    code, out, err = await kernos(config_file(settings, tmp_path, database=owner), "db", "upgrade")
    assert code == 0, err
    assert out.strip() == "the schema is up to date"


async def test_usage_and_budget(settings: Settings, tmp_path: Path) -> None:
    config = config_file(settings, tmp_path)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, out, err = await kernos(config, "budget", "set", name, "500")
    assert code == 0, err
    assert out.strip() == f"tenant {name}: budget of 500 tokens"
    code, out, _ = await kernos(config, "usage", "--tenant", name, "--json")
    assert code == 0
    assert json.loads(out)["tenants"] == [
        {"tenant": name, "input_tokens": 0, "output_tokens": 0, "syscalls": 0, "max_tokens": 500}
    ]
    code, _, err = await kernos(config, "budget", "set", name, "0")
    assert_one_line_error(code, err, "a token budget must be at least 1, not 0")
    code, out, _ = await kernos(config, "budget", "clear", name)
    assert code == 0
    assert out.strip() == f"tenant {name}: no budget"
    code, out, _ = await kernos(config, "usage", "--tenant", name, "--json")
    assert json.loads(out)["tenants"] == []
    # The operator's budget changes are in the tenant's audit chain; the refused one is not.
    code, out, _ = await kernos(config, "audit", "--tenant", name, "--json")
    assert [
        (r["syscall"], r["user_name"], r["reason"]) for r in map(json.loads, out.splitlines())
    ] == [
        ("budget.set", "operator", "capped at 500 tokens"),
        ("budget.set", "operator", "lifted the cap"),
    ]


async def test_llm_serve_sglang(settings: Settings, tmp_path: Path) -> None:
    config = config_file(settings, tmp_path)
    args = ("llm", "serve", "--kind", "sglang", "--model", "/models/qwen", "--name", "qwen",
            "--port", "30001", "--slots", "64")  # fmt: skip
    code, out, err = await kernos(config, *args, "--dry-run")
    assert code == 0, err
    command = out.split()
    assert command[1:3] == ["-m", "sglang.launch_server"]
    for flag in ("--enable-priority-scheduling", "--schedule-low-priority-values-first",
                 "--enable-metrics"):  # fmt: skip
        assert flag in command
    assert command[command.index("--port") + 1] == "30001"
    assert command[command.index("--max-running-requests") + 1] == "64"
    assert command[command.index("--served-model-name") + 1] == "qwen"
    code, _, err = await kernos(config, *args)  # SGLang is not installed on this CPU host
    assert_one_line_error(code, err, "SGLang is not installed here")


async def test_memory_list_search_delete(settings: Settings, tmp_path: Path) -> None:
    config = config_file(settings, tmp_path)
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    steps = [
        {"op": "add", "content": "The deploy key rotates every ninety days."},
        {"op": "add", "content": "Lunch is at noon on Fridays."},
    ]
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(steps), tenant=tenant))
        deploy, lunch = json.loads((await handle.result()).output)
    where = ["--tenant", tenant, "--agent", "memo"]
    code, out, err = await kernos(config, "memory", "list", *where, "--json")
    assert code == 0, err
    assert [item["id"] for item in json.loads(out)["items"]] == [lunch["id"], deploy["id"]]
    code, out, err = await kernos(config, "memory", "search", *where, "key rotation", "-k", "1")
    assert code == 0, err
    assert deploy["id"] in out and lunch["id"] not in out
    code, out, _ = await kernos(config, "memory", "delete", *where, deploy["id"])
    assert (code, out.strip()) == (0, f"{deploy['id']}: deleted")
    code, out, _ = await kernos(config, "memory", "delete", *where, deploy["id"])
    assert (code, out.strip()) == (1, f"{deploy['id']}: not in agent/memo")
    code, out, _ = await kernos(config, "audit", "--tenant", tenant, "--json")
    deletes = [r for r in map(json.loads, out.splitlines()) if r["syscall"] == "memory.delete"]
    assert [r["reason"] for r in deletes] == [f"delete item {deploy['id']}"] * 2
    code, _, err = await kernos(config, "memory", "list", "--tenant", tenant, "--scope", "../x")
    assert_one_line_error(code, err, "scope '../x' is not a valid name")


async def test_storage_list_and_purge(settings: Settings, tmp_path: Path) -> None:
    config = config_file(settings, tmp_path)
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    steps = [
        {"op": "storage.write", "path": "keep.md", "content": "kept"},
        {"op": "storage.write", "path": "gone.md", "content": "gone once"},
        {"op": "storage.write", "path": "gone.md", "content": "kept"},  # shares keep.md's blob
        {"op": "storage.delete", "path": "gone.md"},
    ]
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(steps), tenant=tenant))
        await handle.result()
    where = ["--tenant", tenant, "--agent", "memo"]
    code, out, err = await kernos(config, "storage", "list", *where, "--json")
    assert code == 0, err
    assert [(f["path"], f["deleted"]) for f in json.loads(out)["files"]] == [
        ("gone.md", True), ("keep.md", False),
    ]  # fmt: skip
    code, out, err = await kernos(config, "storage", "purge", *where)
    assert (code, out.strip()) == (0, "purged 1 deleted files and 1 contents nothing refers to")
    code, out, _ = await kernos(config, "storage", "list", *where, "--json")
    assert [f["path"] for f in json.loads(out)["files"]] == ["keep.md"]
    code, _, err = await kernos(config, "storage", "purge", *where, "--path", "/abs")
    assert_one_line_error(code, err, "is absolute")
