"""The README's tables of figures are what `bench/results/*.json` holds (no server needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RENDER = ROOT / "bench" / "readme_figures.py"


def check(readme: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RENDER), "--check", "--readme", str(readme)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_readme_shows_the_last_benchmark_figures() -> None:
    checked = check(ROOT / "README.md")
    assert checked.returncode == 0, checked.stderr
    readme = (ROOT / "README.md").read_text()
    for name in ("pools", "syscall_overhead", "llm_throughput", "memory", "storage", "access",
                 "fairness", "scaling", "run_cost", "scheduling"):  # fmt: skip
        assert f"<!-- figures: {name} -->\n|" in readme, name


def test_a_figure_typed_by_hand_is_caught_and_rendered_over(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    typed = readme.replace("| llama-server directly | ", "| llama-server directly | 999.9 / ", 1)
    assert typed != readme
    copy = tmp_path / "README.md"
    copy.write_text(typed)
    checked = check(copy)
    assert checked.returncode == 1
    assert "README figures out of date: llm_throughput" in checked.stderr
    subprocess.run([sys.executable, str(RENDER), "--readme", str(copy)], check=True, timeout=60)
    assert copy.read_text() == readme


def test_an_unknown_table_name_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "README.md"
    copy.write_text("<!-- figures: nonesuch -->\n<!-- /figures -->\n")
    checked = check(copy)
    assert checked.returncode != 0
    assert "the README names figures 'nonesuch'" in checked.stderr
