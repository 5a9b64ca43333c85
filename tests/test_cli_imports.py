"""The `kernos` command loads what a command needs when it runs.

`--help` loads no client, and the client no policy store, MCP or OpenTelemetry
(bench/cli_startup.py times them).
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("temporalio", "psycopg", "casbin", "sqlalchemy", "mcp", "opentelemetry", "pydantic")


def loaded_after(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has loaded after running `code`."""
    probe = (
        f"import sys\n{code}\nimport json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    return list(json.loads(done.stdout))


def test_the_help_loads_none_of_the_heavy_packages() -> None:
    code = (
        "from kernos.cli import build_parser\n"
        "parser = build_parser()\n"
        "for action in parser._subparsers._group_actions:\n"
        "    for sub in action.choices.values(): sub.format_help()\n"
        "parser.format_help()"
    )
    assert loaded_after(code) == []


def test_the_client_loads_no_policy_store_mcp_or_tracing() -> None:
    # Casbin's core is small (the client names decisions); its database adapter is not.
    assert set(loaded_after("import kernos.client")) & {"sqlalchemy", "mcp", "opentelemetry"} == (
        set()
    )
