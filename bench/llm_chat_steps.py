"""Where a kernel worker's `llm.chat` spends its time, step by step, on the fixed-speed fake.

One-call kernos runs (the request `bench/run_cost.py` sends) one after the other; each step of
the kernel's side is timed in this process: the caller's identity, the durable decision, the
generation, the record of its result, and the interceptor around them all. The rest of the
activity's time in its history (`bench/run_cost.py`'s "llm.chat: run") is the worker's own
handling around the interceptor. Printed as p50 over the runs after five to warm up;
`bench/results/llm_chat_steps.json` keeps them.
Run: `python bench/llm_chat_steps.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from bench_results import run_benchmark, write_results
from bench_stack import kernel, services
from run_cost import SIM_REPLY, SIM_TOKEN_S, kernos_call

from kernos.activities.interceptor import _SyscallInbound
from kernos.activities.llm import LLMActivities
from kernos.infra.llama import MODEL_ALIAS
from kernos.kernel.audit import AuditLog
from kernos.kernel.identity import IdentityResolver
from kernos.testing.fake_openai import FakeOpenAIServer

#: Runs before timing starts: the pool's process, the caches, the connections.
WARM_UP = 5
#: Each step timed: the class, its method, and the step's name in the figures.
STEPS: list[tuple[type, str, str]] = [
    (_SyscallInbound, "execute_activity", "interceptor, in all"),
    (IdentityResolver, "resolve", "identity"),
    (AuditLog, "record_decision", "durable decision"),
    (LLMActivities, "_generate", "generation"),
    (AuditLog, "record_result", "result's record"),
]


def timed(steps: dict[str, list[float]]) -> None:
    """Wrap each of STEPS so that its every call adds its milliseconds to `steps`."""
    for cls, method, name in STEPS:
        original: Callable[..., Awaitable[Any]] = getattr(cls, method)

        @functools.wraps(original)
        async def step(
            *args: Any, _original: Callable[..., Awaitable[Any]] = original, _name: str = name,
            **kwargs: Any,
        ) -> Any:  # fmt: skip
            began = time.perf_counter()
            try:
                return await _original(*args, **kwargs)
            finally:
                steps[_name].append((time.perf_counter() - began) * 1000)

        setattr(cls, method, step)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    steps: dict[str, list[float]] = defaultdict(list)
    timed(steps)
    async with (
        services() as running,
        FakeOpenAIServer(lambda body: SIM_REPLY, token_delay_s=SIM_TOKEN_S) as fake,
    ):
        settings = running.settings(
            llm=[
                {"name": "local", "kind": "openai", "model": MODEL_ALIAS, "base_url": fake.base_url}
            ]
        )
        async with kernel(settings) as client:
            for run in range(WARM_UP + args.runs):
                if run == WARM_UP:
                    steps.clear()
                await kernos_call(client)
    figures = {name: round(statistics.median(steps[name]), 2) for _, _, name in STEPS}
    for name, ms in figures.items():
        print(f"{name:<22} p50 {ms:7.2f} ms")
    write_results("llm_chat_steps", {"runs": args.runs, "p50_ms": figures})


if __name__ == "__main__":
    run_benchmark(main)
