"""Fingerprints of the code a run replays, taken when its histories were last looked at.

A run's workflow code is replayed, from the start of its history, by whatever code the worker
has when the run next wakes: a change to what that code does can break every run in flight
(Temporal's nondeterminism error), however long ago it started. The code in question is every
kernos module the workflow definition, the SDK's agent class, the shipped agents and the pool
host's checks of what a run sends and is sent import; each is fingerprinted
by its syntax tree, without docstrings, so comments, docstrings and formatting do not count.

The fast tier compares them with `tests/workflow_sources.json`: a change fails it until
a new history covering it is recorded (`python -m tests.record_history`), or the change is
guarded by `workflow.patched` and a history of both branches is committed, and then the new
fingerprints are taken with `python -m tests.workflow_sources`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

RECORDED = Path(__file__).with_suffix(".json")
#: What a run's code is made of: the workflow definition, the agents' base class, the agents
#: kernos ships, the tools' SDK and the framework adapters, and what a pool's host checks and
#: rewrites in what a run sends and is sent (its replays pass the same checks).
ROOTS = (
    "kernos.workflows.agent_run",
    "kernos.agent",
    "kernos.examples.planner",
    "kernos.examples.react",
    "kernos.kernel.tools",
    "kernos.adapters.openai_agents",
    "kernos.adapters.langgraph",
    "kernos.adapters.pydantic_ai",
    "kernos.chat_run",
    "kernos.workflows.activation_check",
    "kernos.workflows.commands",
    "kernos.workflows.run_limits",
)

_CLOSURE = (
    "import sys\n"
    + "".join(f"import {root}\n" for root in ROOTS)
    + "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] == 'kernos')))"
)


def workflow_modules() -> list[str]:
    """The kernos modules a fresh interpreter holds once it imports the roots."""
    listed = subprocess.run(
        [sys.executable, "-c", _CLOSURE], capture_output=True, text=True, check=True, timeout=60
    )
    return listed.stdout.split()


def fingerprint(source: str) -> str:
    """The module's syntax tree without docstrings, hashed."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def fingerprints() -> dict[str, str]:
    """Module -> its fingerprint, for every module a run's code is made of."""
    found: dict[str, str] = {}
    for name in workflow_modules():
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        found[name] = fingerprint(Path(spec.origin).read_text())
    return found


def changed() -> list[str]:
    """The modules added, removed or changed since the fingerprints were taken."""
    recorded: dict[str, str] = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    now = fingerprints()
    names = recorded.keys() | now.keys()
    return sorted(name for name in names if recorded.get(name) != now.get(name))


if __name__ == "__main__":
    RECORDED.write_text(json.dumps(fingerprints(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORDED}")
