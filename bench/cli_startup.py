"""How quickly the `kernos` command answers: `--help`, and `ps` against a running kernel.

Each command runs as a person runs it (a fresh Python process, `python -m kernos.cli`), on the
embedded servers this benchmark starts; the figure is the median wall time of several tries,
interleaved. Side by side, in the same run: Python starting and doing nothing, and Python
importing what every command imported before commands loaded their modules as they ran (the
client, the policy store, telemetry, the MCP client).

Run: `python bench/cli_startup.py` (writes bench/results/cli_startup.json).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_results import run_benchmark, write_results

from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.db import upgrade

TRIES = 9
#: What every command imported before it loaded what it needs as it runs.
EAGER = (
    "import kernos.client, kernos.kernel.policy_store, kernos.kernel.telemetry, "
    "kernos.kernel.tools.mcp_servers, kernos.approval_decisions"
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed: {done.stderr.decode()[-2000:]}")
    return elapsed


async def main() -> None:
    postgres = EmbeddedPostgres.start(Path(tempfile.mkdtemp()) / "data")
    temporal = await TemporalDevServer.start(headless=True)
    try:
        await upgrade(postgres.dsn(role="owner"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERNOS_")}
        env |= {
            "KERNOS_TEMPORAL__ADDRESS": temporal.address,
            "KERNOS_DATABASE__DSN": postgres.dsn(),
            "KERNOS_CONFIG": str(Path(tempfile.mkdtemp()) / "none.toml"),
        }
        python = sys.executable
        commands = {
            "python": [python, "-c", "pass"],
            "eager_imports": [python, "-c", EAGER],
            "help": [python, "-m", "kernos.cli", "--help"],
            "ps": [python, "-m", "kernos.cli", "ps"],
        }
        for argv in commands.values():
            timed(argv, env)  # warm the file cache
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(TRIES):
            for name, argv in commands.items():
                samples[name].append(timed(argv, env))
    finally:
        temporal.stop()
        postgres.stop(delete=True)
    figures = {f"{name}_s": round(statistics.median(values), 3) for name, values in samples.items()}
    print(f"{'median of ' + str(TRIES):<40}{'seconds':>9}")
    for label, key in (
        ("python -c pass", "python_s"),
        ("importing what commands imported before", "eager_imports_s"),
        ("kernos --help", "help_s"),
        ("kernos ps (a running kernel)", "ps_s"),
    ):
        print(f"{label:<40}{figures[key]:>9.3f}")
    write_results(
        "cli_startup",
        figures
        | {
            "method": f"median wall time of {TRIES} fresh processes each, interleaved; ps "
            "against the embedded PostgreSQL and Temporal dev server this benchmark starts"
        },
    )


if __name__ == "__main__":
    run_benchmark(main)
