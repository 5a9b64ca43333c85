"""The package's layout: a module's name says what it holds, and no two share one."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tests.test_syscall_table import PACKAGE, ROOT


def repeated_basenames(root: Path, folders: tuple[str, ...]) -> dict[str, list[str]]:
    """Module file names found in more than one place under `folders` (packages' `__init__`
    aside)."""
    places: defaultdict[str, list[str]] = defaultdict(list)
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if path.name != "__init__.py":
                places[path.name].append(str(path.relative_to(root)))
    return {name: where for name, where in places.items() if len(where) > 1}


def test_no_module_name_is_used_twice_in_the_package() -> None:
    # A reader who meets `worker.py` or `errors.py` in a traceback should know which one.
    assert repeated_basenames(ROOT, PACKAGE) == {}


def test_the_check_finds_a_repeated_name(tmp_path: Path) -> None:
    for module in ("a/worker.py", "b/worker.py", "b/c/errors.py", "a/__init__.py", "b/__init__.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("")
    assert repeated_basenames(tmp_path, ("a", "b")) == {"worker.py": ["a/worker.py", "b/worker.py"]}
