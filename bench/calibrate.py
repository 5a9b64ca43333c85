"""Fit the simulated backend to the real llama.cpp server, and check its shape against it.

llama-server (Gemma 3 270M Q4_K_M, `-np 8`, 2 threads) is asked for 64 tokens (EOS ignored)
by 1, 2, 4 and 8 clients at once; from the aggregate decode rate at each batch size the
per-step time `t(b) = b / tokens_per_s(b)` is fitted as `step_s + step_per_request_s * b`, and
prefill from one long prompt. The simulator then runs the same loads with the fit.
Run: `python bench/calibrate.py` (writes bench/results/calibration.json).
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
from bench_results import run_benchmark, write_results
from simulator import simulated_server

from kernos.infra.daemons import stop
from kernos.infra.llama import LlamaServer, local_model
from kernos.infra.ports import free_port
from kernos.kernel.llm.sglang import SGLangBackend
from kernos.kernel.syscalls import LLMRequest

BATCHES = (1, 2, 4, 8)
TOKENS = 64


async def llama_rate(base_url: str, batch: int) -> float:
    """Aggregate decode tokens/s with `batch` streams (prompt cached, EOS ignored)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:

        async def one(index: int) -> tuple[int, float]:
            response = await client.post(
                "/completion",
                json={"prompt": f"Story {index}: once upon a time", "n_predict": TOKENS,
                      "ignore_eos": True, "temperature": 0.8, "cache_prompt": True},
            )  # fmt: skip
            body = response.json()
            return int(body["tokens_predicted"]), float(body["timings"]["predicted_ms"])

        await asyncio.gather(*(one(i) for i in range(batch)))  # warm the slots' caches
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(batch)))
        return sum(tokens for tokens, _ in results) / (time.perf_counter() - started)


async def prefill_rate(base_url: str) -> float:
    """Prompt tokens/s of one uncached long prompt."""
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        prompt = " ".join(f"fact {i} about lighthouses." for i in range(80))
        response = await client.post("/completion", json={"prompt": prompt, "n_predict": 1})
        return float(response.json()["timings"]["prompt_per_second"])


async def simulated_rate(batch: int, fitted: dict[str, float]) -> float:
    """The simulator's aggregate tokens/s at `batch`, with the fitted constants."""
    async with simulated_server(**fitted) as server:
        backend = SGLangBackend("sim", server.base_url)
        request = LLMRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x"}],
             "sampling": {"max_tokens": TOKENS}},
        )  # fmt: skip
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(backend.chat(request, lambda _: None) for _ in range(batch))
        )
        elapsed = time.perf_counter() - started
        await backend.aclose()
    return sum(r.usage.output_tokens for r in responses) / elapsed


def fit(rates: dict[int, float]) -> tuple[float, float]:
    """Least squares of step time against batch size: (intercept, slope)."""
    points = [(b, b / rate) for b, rate in rates.items()]
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    slope = sum((b - mean_b) * (t - mean_t) for b, t in points) / sum(
        (b - mean_b) ** 2 for b, _ in points
    )
    return max(0.0, mean_t - slope * mean_b), max(0.0, slope)


async def main() -> None:
    work = Path(tempfile.mkdtemp())
    model = local_model(Path.home() / ".cache" / "kernos" / "models")
    llama = await LlamaServer.start(
        model, port=free_port(), slots=8, context=1024 * 8, log_file=work / "llama.log"
    )
    try:
        measured = {b: await llama_rate(llama.base_url, b) for b in BATCHES}
        prefill = await prefill_rate(llama.base_url)
    finally:
        stop(llama.pid)
    step_s, per_request = fit(measured)
    fitted = {
        "step_s": round(step_s, 5),
        "step_per_request_s": round(per_request, 5),
        "prefill_per_token_s": round(1 / prefill, 5),
    }
    simulated = {b: await simulated_rate(b, fitted) for b in BATCHES}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "server": "llama-server, Gemma 3 270M Q4_K_M, -np 8, 2 threads",
        "measured_tokens_per_s": {str(b): round(r, 1) for b, r in measured.items()},
        "simulated_tokens_per_s": {str(b): round(r, 1) for b, r in simulated.items()},
        "fit": fitted,
    }
    print(f"{'parallel':<10}{'llama-server tok/s':>20}{'simulator tok/s':>18}")
    for b in BATCHES:
        print(f"{b:<10}{measured[b]:>20.1f}{simulated[b]:>18.1f}")
    write_results("calibration", result)


if __name__ == "__main__":
    run_benchmark(main)
