"""Where the benchmarks write their figures, and how they end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kernos.infra.process import exit_process

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], share: float) -> float:
    """The value at `share` (0.99: the p99) of `values`, nearest rank from below."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def write_results(name: str, result: dict[str, Any]) -> None:
    """Write `bench/results/<name>.json` and say so."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def run_benchmark(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a benchmark and end the process without the Temporal core's exit-time crash."""
    asyncio.run(main())
    exit_process(0)
