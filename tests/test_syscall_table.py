"""The syscall table is the one declaration of each syscall."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from kernos.kernel.syscall_table import ACTIONS, SYSCALLS, on_queue, syscall_of
from kernos.kernel.syscalls import LLMRequest, MemoryScoped, StorageList, SyscallRequest

ROOT = Path(__file__).parent.parent
#: The package's folders (setuptools maps them to kernos.*).
PACKAGE = ("sdk", "kernel", "activities", "workflows", "infra", "policies")
TABLE = ROOT / "kernel" / "syscall_table.py"


def _docstrings(tree: ast.Module) -> set[int]:
    """The string constants that stand alone as statements: docstrings, of modules, classes,
    functions and attributes."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


NAMES = sorted({*SYSCALLS, *ACTIONS}, key=len, reverse=True)
SPELLED = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, NAMES)) + r")(?![\w])")


def spelled_in(path: Path) -> list[str]:
    """The file's string literals (docstrings aside) that spell a syscall or action name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and (match := SPELLED.search(node.value))
        ):
            found.append(f"{path.name}:{node.lineno}: {match[1]!r} in {node.value!r}")
    return found


def test_no_syscall_name_is_spelled_outside_the_table() -> None:
    found = [
        problem
        for folder in PACKAGE
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != TABLE
        for problem in spelled_in(path)
    ]
    assert found == []


def test_the_scan_finds_a_spelled_name(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        '"""memory.add, in a docstring, documents."""\n'
        'summary = f"memory.add {k}"\n'
        'queue = "llm.chatter"\n'
        'prefix = "tools.call"\n'
    )
    assert spelled_in(source) == ["module.py:2: 'memory.add' in 'memory.add '"]


def test_each_request_type_is_one_syscalls() -> None:
    requests = [syscall.request for syscall in SYSCALLS.values()]
    assert len(requests) == len(set(requests))
    assert syscall_of(LLMRequest).name == "llm.chat"
    assert syscall_of(StorageList(prefix="notes/")).resource == "storage:<prefix>*"
    for base in (SyscallRequest, MemoryScoped):
        with pytest.raises(LookupError, match=f"{base.__name__} is not the request of any"):
            syscall_of(base)


def test_every_syscall_has_a_queue_and_the_queues_cover_them_all() -> None:
    served = on_queue("kernel") + on_queue("llm") + on_queue("tool")
    assert sorted(served) == sorted(SYSCALLS)
    assert on_queue("llm") == ["llm.chat", "llm.compact", "llm.continue"]
    assert on_queue("tool") == ["tool.call"]
    metered = sorted(name for name, syscall in SYSCALLS.items() if syscall.metered)
    assert metered == on_queue("llm")
