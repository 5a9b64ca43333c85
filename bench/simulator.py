"""The simulated LLM backend of the scheduling benchmarks, and the naive client they beat.

The backend is `tests/fake_sglang.py`'s server (SGLang's HTTP API on a continuous-batching
engine: per-step latency `step_s + step_per_request_s * batch`, prefill per uncached prompt
token, a prefix cache, unbounded unless `cache_tokens` sizes its KV pool,
`max_running_requests` slots), with its constants fitted by `bench/calibrate.py` to the
llama.cpp server measured on this machine. The naive client is what
agents do without a kernel: pick an instance round-robin, call it, honour 429/503 by retrying
after a delay, and give up after a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernos.kernel.errors import LLMRateLimited, LLMUnavailable
from kernos.kernel.llm.base import Placement
from kernos.kernel.llm.sglang import SGLangBackend
from kernos.kernel.syscalls import LLMRequest
from kernos.testing.fake_sglang import FakeSGLangServer

CALIBRATION = Path(__file__).parent / "results" / "calibration.json"
#: Measured here before calibrate.py wrote its file (llama-server, Gemma 3 270M, 2 cores).
DEFAULTS = {"step_s": 0.0076, "step_per_request_s": 0.0057, "prefill_per_token_s": 0.0041}


def constants() -> dict[str, float]:
    """The engine's timing constants: calibrate.py's fit if it has run, else the defaults."""
    if CALIBRATION.exists():
        fitted = json.loads(CALIBRATION.read_text())["fit"]
        return {key: float(fitted[key]) for key in DEFAULTS}
    return dict(DEFAULTS)


def simulated_server(**options: Any) -> FakeSGLangServer:
    """A simulated SGLang instance with the calibrated timings (options override)."""
    settings: dict[str, Any] = {"max_running_requests": 8, "eos": False, **constants()}
    settings.update(options)
    return FakeSGLangServer(**settings)


@dataclass
class Outcome:
    """One request of a naive client."""

    latency_s: float
    output_tokens: int = 0
    failed: str | None = None
    text: str = ""


@dataclass
class NaiveClients:
    """Clients that pick instances round-robin, retrying 429/503 until a deadline."""

    urls: list[str]
    timeout_s: float = 60.0
    retry_delay_s: float = 0.5
    _next: itertools.cycle[int] = field(init=False)
    _backends: list[SGLangBackend] = field(init=False)

    def __post_init__(self) -> None:
        self._next = itertools.cycle(range(len(self.urls)))
        self._backends = [
            SGLangBackend(f"sim{i}", url, read_timeout_s=self.timeout_s)
            for i, url in enumerate(self.urls)
        ]

    async def request(self, request: LLMRequest) -> Outcome:
        """One request, as an agent without a kernel makes it."""
        started = time.perf_counter()
        deadline = started + self.timeout_s
        while True:
            backend = self._backends[next(self._next)]
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return Outcome(time.perf_counter() - started, failed="timed out")
            try:
                response = await asyncio.wait_for(
                    backend.chat(request, lambda _: None, None, Placement()), remaining
                )
            except TimeoutError:
                return Outcome(time.perf_counter() - started, failed="timed out")
            except (LLMRateLimited, LLMUnavailable) as exc:
                delay = getattr(exc, "retry_after_s", None) or self.retry_delay_s
                await asyncio.sleep(min(delay, max(0.0, deadline - time.perf_counter())))
                continue
            return Outcome(
                time.perf_counter() - started, response.usage.output_tokens, text=response.text
            )

    async def aclose(self) -> None:
        """Close the clients' connections."""
        for backend in self._backends:
            await backend.aclose()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]
