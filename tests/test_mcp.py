"""Tools from an MCP server (the official `mcp` package, stdio), called like native tools."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from kernos import KernosClient, ScriptedBackend
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import MCPServerSettings
from kernos.kernel.tools.mcp_servers import MCPServers
from tests.conftest import workers
from tests.test_tools import answer, calls, ledger, run_memo, tool_settings

SERVER = {"command": sys.executable, "args": ["-m", "tests.mcp_server"]}


async def test_a_servers_tools_are_listed_with_their_flags() -> None:
    servers = await MCPServers.open({"test": MCPServerSettings.model_validate(SERVER)})
    try:
        add, delete = servers.tools["test__add"], servers.tools["test__delete_everything"]
        assert (add.irreversible, add.idempotent) == (False, True)  # read-only
        assert (delete.irreversible, delete.idempotent) == (True, False)  # MCP's defaults
        assert add.spec().parameters["required"] == ["a", "b"]
        assert add.spec().description == "Add two integers."
    finally:
        await servers.aclose()


async def test_mcp_tools_are_called_like_native_ones_under_the_same_policies(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"mcp-{uuid.uuid4().hex[:8]}"
    settings = tool_settings(
        temporal, postgres, tmp_path,
        policy="p, *, *, *, tool:test__delete_everything, tool.call, deny\n",
        tools={"mcp": {"test": SERVER}},
    )  # fmt: skip
    backend = ScriptedBackend(
        [
            calls(
                ("test__add", {"a": 2, "b": 3}),
                ("test__add", {"a": "two", "b": 1}),
                ("test__fail", {}),
                ("test__delete_everything", {"confirm": True}),
                ("test__nope", {}),
            ),
            answer("5"),
        ]
    )
    step = {
        "op": "tools.loop",
        "messages": [{"role": "user", "content": "2 + 3?"}],
        "tools": ["test__add", "test__fail", "test__delete_everything"],
    }
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        [result] = await run_memo(client, [step], tenant)
        rows = await ledger(client, tenant)
    outcomes = [(r["name"], r["ok"], r["error_type"]) for r in result["results"]]
    assert outcomes == [
        ("test__add", True, None),
        ("test__add", False, "ToolArgumentsInvalid"),
        ("test__fail", False, "MCPToolError"),
        ("test__delete_everything", False, "AccessDenied"),
        ("test__nope", False, "UnknownTool"),
    ]
    assert result["results"][0]["content"] == "5"
    assert "a: 'two' is not of type 'integer'" in result["results"][1]["content"]
    assert "Error executing tool fail" in result["results"][2]["content"]  # the server's words
    assert "- test__add(a: integer, b: integer): Add two integers." in (
        backend.requests[0].messages[0].content
    )
    assert sorted((r["tool"], r["status"]) for r in rows) == [
        ("test__add", "ok"),
        ("test__fail", "error"),
    ]
    assert result["reply"]["text"] == "5"
