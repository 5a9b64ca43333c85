"""The package's layout: a module's name says what it holds, and no two share one."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

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


ARCHITECTURE = ROOT / "ARCHITECTURE.md"
NAMED_PATH = re.compile(
    r"`((?:sdk|kernel|activities|workflows|infra|policies|bench|tests)/[\w/.]*)`"
)


#: How the README names a module of the installed package: `kernos/workflows/commands.py`.
INSTALLED_PATH = re.compile(r"`kernos/([\w/]+\.py)`")
PACKAGE_DIRS = {"kernel", "activities", "workflows", "infra", "policies"}


@pytest.mark.parametrize("document", ["ARCHITECTURE.md", "README.md", "bench/README.md"])
def test_every_path_a_document_names_exists(document: str) -> None:
    text = (ROOT / document).read_text()
    named = set(NAMED_PATH.findall(text))
    for path in INSTALLED_PATH.findall(text):
        top = path.split("/")[0]
        named.add(path if top in PACKAGE_DIRS else f"sdk/{path}")
    assert named, f"{document} names no path"
    assert sorted(path for path in named if not (ROOT / path).exists()) == []


def test_the_walk_through_counts_its_files() -> None:
    text = ARCHITECTURE.read_text()
    walk = text[text.index("## One `llm.chat`") : text.index("## Where each concern lives")]
    rows = [line.split(" | ") for line in walk.splitlines() if re.match(r"^\| \d+ \|", line)]
    main = {NAMED_PATH.findall(row[1])[0] for row in rows}
    consulted = {path for row in rows for path in NAMED_PATH.findall(row[3])}
    consulted = {path for path in consulted if path.endswith(".py")} - main
    counted = re.search(r"Counted: (\d+) files on the main line, (\d+) more", walk)
    assert counted is not None
    assert (int(counted[1]), int(counted[2])) == (len(main), len(consulted))
