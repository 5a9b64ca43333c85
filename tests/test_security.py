"""The security corpus of the tool path: each forged or bad request ends in a named error, and
nothing changes (no tool runs, no file is written, nothing is charged).

The rest of the corpus lives with what it attacks: a run with no record or a forged identity
(test_identity.py), a prompt-injected model asking for denied and unknown tools
(test_tools.py), a tampered audit row and a consistently rewritten chain (test_audit.py),
policy edits without the role (test_policy_store.py), approvals by a user who may not approve
(test_approvals.py), forged and revoked API keys (test_api_keys.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kernos import KernosClient, RunSpec, Settings
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from tests import tools as test_tools
from tests.conftest import workers
from tests.test_tools import ledger, tool_settings

OVERSIZED = "x" * 20_000


@pytest.fixture(scope="module")
def tenant() -> str:
    return f"sec-{uuid.uuid4().hex[:8]}"


CORPUS: list[tuple[str, dict[str, Any], str]] = [
    # (case, the tools.call step's arguments, the error it must end in)
    ("denied tool", {"tool": "charge", "account": "attacker", "cents": 10**6}, "AccessDenied"),
    ("unknown tool", {"tool": "exfiltrate"}, "UnknownTool"),
    ("tool name with a path", {"tool": "../charge"}, "InvalidRequest"),
    ("missing argument", {"tool": "write_file", "path": "a.md"}, "ToolArgumentsInvalid"),
    (
        "extra argument",
        {"tool": "calculator", "expression": "1", "shell": "rm"},
        "ToolArgumentsInvalid",
    ),
    ("wrong type", {"tool": "calculator", "expression": ["1"]}, "ToolArgumentsInvalid"),
    ("oversized arguments", {"tool": "shout", "text": OVERSIZED}, "PayloadTooLarge"),
    ("oversized result", {"tool": "shout", "text": "y" * 15_000}, "PayloadTooLarge"),
    (
        "path traversal",
        {"tool": "write_file", "path": "../../etc/passwd", "content": "x"},
        "InvalidPath",
    ),
    (
        "absolute path",
        {"tool": "write_file", "path": "/etc/passwd", "content": "x"},
        "InvalidPath",
    ),
    ("NUL in a path", {"tool": "read_file", "path": "a\u0000b"}, "InvalidPath"),
    (
        "code as arithmetic",
        {"tool": "calculator", "expression": "__import__('os')"},
        "InvalidRequest",
    ),
    (
        "a host not allowed",
        {"tool": "http_fetch", "url": "http://169.254.169.254/"},
        "InvalidRequest",
    ),
]


@pytest.mark.parametrize(("case", "step", "error"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_each_bad_call_ends_in_a_named_error_and_changes_nothing(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    tenant: str,
    case: str,
    step: dict[str, Any],
    error: str,
) -> None:
    settings: Settings = tool_settings(
        temporal, postgres, tmp_path,
        policy=f"p, *, *, {tenant}, tool:charge, tool.call, deny\n",
        tools={"max_argument_bytes": 16_384, "max_result_bytes": 10_000},
    )  # fmt: skip
    async with workers(settings), await KernosClient.connect(settings) as client:
        before = await ledger(client, tenant)
        steps = [{"op": "tools.call", **step}, {"op": "storage.list"}]
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(steps), tenant=tenant))
        result, files = json.loads((await handle.result()).output)
        after = await ledger(client, tenant)
    found = result.get("error") or result.get("error_type")
    assert found == error, f"{case}: {result}"
    assert files == []  # nothing was written
    assert not (test_tools.EFFECTS / tenant).exists()  # nothing was charged
    ran = [row for row in after[len(before) :] if row["status"] == "ok"]
    assert ran == [], f"{case}: a tool ran: {ran}"
