"""How each LLM instance is doing, from its own endpoints: health, running and queued work."""

from __future__ import annotations

import asyncio

import httpx
from pydantic import BaseModel

from kernos.kernel.config import LLMInstance

#: Prometheus gauges of running and waiting requests, by server (llama.cpp, vLLM, SGLang).
_RUNNING = ("llamacpp:requests_processing", "vllm:num_requests_running", "sglang:num_running_reqs")
_QUEUED = ("llamacpp:requests_deferred", "vllm:num_requests_waiting", "sglang:num_queue_reqs")


class InstanceStatus(BaseModel):
    """One line of `kernos instances`."""

    name: str
    kind: str
    model: str
    base_url: str | None
    slots: int
    """What the kernel lets this instance run at once (`[[llm]] slots`; its workers take the
    instance's `[[llm]] queued` more, sent ahead to wait at the server)."""
    healthy: bool
    running: int | None = None
    queued: int | None = None
    server_slots: int | None = None
    """Parallel slots the server itself reports (llama.cpp's /slots, SGLang's /v1/loads)."""
    cache_hit_rate: float | None = None
    """The share of prompt tokens served from the prefix cache (SGLang)."""
    detail: str = ""


def _gauge(text: str, names: tuple[str, ...]) -> int | None:
    total = None
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            total = (total or 0) + int(float(line.rsplit(" ", 1)[1]))
    return total


async def probe(instance: LLMInstance, timeout_s: float = 3.0) -> InstanceStatus:
    """Ask an instance how it is; never raises for a server that is down."""
    status = InstanceStatus(
        name=instance.name,
        kind=instance.kind,
        model=instance.model,
        base_url=instance.base_url,
        slots=instance.slots,
        healthy=instance.kind == "scripted",
    )
    if instance.base_url is None:
        return status
    headers = {}
    if instance.api_key is not None:
        headers["Authorization"] = f"Bearer {instance.api_key.get_secret_value()}"
    async with httpx.AsyncClient(
        base_url=instance.base_url, timeout=timeout_s, headers=headers
    ) as client:
        health, metrics, slots = await asyncio.gather(
            _get(client, "/health"), _get(client, "/metrics"), _get(client, "/slots"),
            return_exceptions=True,
        )  # fmt: skip
        if isinstance(health, httpx.Response) and health.status_code == 200:
            status.healthy = True
        else:
            models = await _get(client, "/v1/models")
            status.healthy = isinstance(models, httpx.Response) and models.status_code == 200
            if not status.healthy:
                status.detail = _describe(health)
        if isinstance(metrics, httpx.Response) and metrics.status_code == 200:
            status.running = _gauge(metrics.text, _RUNNING)
            status.queued = _gauge(metrics.text, _QUEUED)
        if instance.kind == "sglang":
            await _sglang_loads(client, status)
        if isinstance(slots, httpx.Response) and slots.status_code == 200:
            listed = slots.json()
            if isinstance(listed, list):
                status.server_slots = len(listed)
                if status.running is None:
                    status.running = sum(1 for slot in listed if slot.get("is_processing"))
    return status


async def _sglang_loads(client: httpx.AsyncClient, status: InstanceStatus) -> None:
    """Running and waiting requests summed over SGLang's data-parallel ranks (`/v1/loads`)."""
    loads = await _get(client, "/v1/loads?include=core")
    if not isinstance(loads, httpx.Response) or loads.status_code != 200:
        return
    ranks = loads.json().get("loads") or []
    if not ranks:
        return
    status.running = sum(int(rank.get("num_running_reqs", 0)) for rank in ranks)
    status.queued = sum(int(rank.get("num_waiting_reqs", 0)) for rank in ranks)
    status.server_slots = sum(int(rank.get("max_running_requests", 0)) for rank in ranks) or None
    status.cache_hit_rate = sum(float(rank.get("cache_hit_rate", 0.0)) for rank in ranks) / len(
        ranks
    )


async def _get(client: httpx.AsyncClient, path: str) -> httpx.Response | BaseException:
    try:
        return await client.get(path)
    except httpx.HTTPError as exc:
        return exc


def _describe(outcome: httpx.Response | BaseException) -> str:
    if isinstance(outcome, httpx.Response):
        return f"/health answered {outcome.status_code}"
    return f"unreachable: {type(outcome).__name__}"
