"""The SGLang backend against SGLang's HTTP API.

Without options these run against the fake server in `tests/fake_sglang.py`; with
`pytest tests/test_sglang.py --sglang-url http://gpu-host:30000` the conformance tests (those
taking `sglang`) run against a real server started as `kernos llm serve --kind sglang` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from kernos.kernel.config import LLMInstance
from kernos.kernel.errors import ContextTooLong, LLMBadRequest, LLMUnavailable
from kernos.kernel.llm.base import SLICE_END, Placement, Snapshot
from kernos.kernel.llm.probe import probe
from kernos.kernel.llm.sglang import SGLangBackend
from kernos.kernel.syscalls import MAX_TOOL_ARGUMENTS, LLMRequest, LLMResponse, ToolSpec
from kernos.testing.fake_sglang import FakeSGLangServer, PrefixCache, calls_then_answers
from tests.waiting import eventually


class Target:
    """A server under test: its URL, its served model, and the fake behind it if any."""

    def __init__(self, url: str, model: str, fake: FakeSGLangServer | None) -> None:
        self.url = url
        self.model = model
        self.fake = fake

    def backend(self, *, priority_scheduling: bool = True) -> SGLangBackend:
        return SGLangBackend("under-test", self.url, priority_scheduling=priority_scheduling)

    def request(self, content: str, max_tokens: int | None = 24) -> LLMRequest:
        return LLMRequest.model_validate(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": content}],
                "sampling": {"max_tokens": max_tokens, "temperature": 0.0},
            }
        )


@pytest.fixture
async def sglang(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    url = request.config.getoption("--sglang-url")
    if url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            info = (await client.get("/model_info")).json()
        yield Target(url, str(info["served_model_name"]).replace("/", "-"), None)
        return
    async with FakeSGLangServer(eos=False) as fake:
        yield Target(fake.base_url, fake.served_model_name, fake)


async def collect(
    backend: SGLangBackend,
    request: LLMRequest,
    resume: Snapshot | None = None,
    placement: Placement | None = None,
) -> tuple[str, Snapshot, LLMResponse]:
    seen: list[Snapshot] = []
    response = await backend.chat(
        request, lambda s: seen.append(s.model_copy(deep=True)), resume, placement
    )
    last = seen[-1] if seen else Snapshot()
    return response.text, last, response


async def test_reports_health_and_load(sglang: Target) -> None:
    instance = LLMInstance(
        name="under-test", kind="sglang", model=sglang.model, base_url=sglang.url
    )
    status = await probe(instance)
    assert status.healthy, status.detail
    assert status.running is not None and status.queued is not None
    assert status.server_slots is not None and status.server_slots >= 1


async def test_generates_with_token_counts(sglang: Target) -> None:
    backend = sglang.backend()
    try:
        text, last, response = await collect(backend, sglang.request("Say hello.", max_tokens=8))
    finally:
        await backend.aclose()
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 8
    assert response.usage.output_tokens == len(last.tokens)
    assert response.finish_reason in ("length", "stop")
    assert text == response.text


async def test_slice_then_resume_equals_one_generation(sglang: Target) -> None:
    """Greedy decoding: stopping at a slice and resuming from the ids gives the same tokens,
    and the resumed prefill comes from the server's prefix cache."""
    backend = sglang.backend()
    request = sglang.request("Count slowly from one to fifty.", max_tokens=24)
    try:
        whole_text, whole, _ = await collect(backend, request)
        _, first, sliced = await collect(backend, request, placement=Placement(slice_tokens=10))
        assert sliced.finish_reason == SLICE_END
        assert len(first.tokens) == 10
        rest_text, rest, resumed = await collect(backend, request, resume=first)
    finally:
        await backend.aclose()
    assert rest.tokens == whole.tokens
    assert rest_text == whole_text
    assert resumed.resumed_from == 10
    assert resumed.usage.output_tokens == len(whole.tokens)
    assert resumed.usage.cached_input_tokens >= resumed.usage.input_tokens - 10 - 1


async def test_context_too_long_names_both_sizes(sglang: Target) -> None:
    backend = sglang.backend()
    async with httpx.AsyncClient(base_url=sglang.url) as client:
        window = (await client.post("/tokenize", json={"prompt": "x"})).json()["max_model_len"]
    try:
        with pytest.raises(ContextTooLong) as raised:
            await backend.chat(sglang.request("word " * (window + 10)), lambda _: None)
    finally:
        await backend.aclose()
    assert str(window) in str(raised.value)


async def test_cancel_aborts_the_generation_on_the_server(sglang: Target) -> None:
    backend = sglang.backend()
    started = asyncio.Event()
    placement = Placement(request_id=f"cancel-test-{time.monotonic_ns()}")
    task = asyncio.create_task(
        backend.chat(
            sglang.request("Write a long story.", max_tokens=4000),
            lambda _: started.set(),
            None,
            placement,
        )
    )
    instance = LLMInstance(name="t", kind="sglang", model=sglang.model, base_url=sglang.url)
    try:
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(
            lambda: probe(instance), lambda load: not load.running,
            what="the server stopped generating after the cancel",
        )  # fmt: skip
    finally:
        await backend.aclose()
    if sglang.fake is not None:
        assert placement.request_id in sglang.fake.abort_requests


# The fake only: what a real server does not let a test arrange.


async def arrived(fake: FakeSGLangServer, count: int) -> None:
    await eventually(
        lambda: len(fake.requests) >= count, what=f"{count} requests", timeout_s=10,
        every_s=0.005,
    )  # fmt: skip


async def test_priority_is_forwarded_and_orders_the_server_queue() -> None:
    async with FakeSGLangServer(max_running_requests=1, step_s=0.005, eos=False) as fake:
        target = Target(fake.base_url, fake.served_model_name, fake)
        backend = target.backend()
        finished: list[str] = []

        async def one(name: str, priority: int | None, max_tokens: int) -> None:
            placement = Placement(request_id=name, priority=priority)
            await backend.chat(target.request(name, max_tokens), lambda _: None, None, placement)
            finished.append(name)

        try:
            blocker = asyncio.create_task(one("blocker", 3, 40))
            await arrived(fake, 1)
            low = asyncio.create_task(one("low", 5, 4))
            await arrived(fake, 2)
            high = asyncio.create_task(one("high", 1, 4))
            await asyncio.gather(blocker, low, high)
        finally:
            await backend.aclose()
    assert [r.body["priority"] for r in fake.requests] == [3, 5, 1]
    assert finished == ["blocker", "high", "low"]


async def test_a_server_without_priority_scheduling_gets_no_priority() -> None:
    async with FakeSGLangServer(priority_scheduling=False) as fake:
        target = Target(fake.base_url, fake.served_model_name, fake)
        refused, plain = target.backend(), target.backend(priority_scheduling=False)
        try:
            with pytest.raises(LLMUnavailable, match="priority is disabled"):
                await refused.chat(
                    target.request("hi"), lambda _: None, None, Placement(priority=2)
                )
            response = await plain.chat(
                target.request("hi"), lambda _: None, None, Placement(priority=2)
            )
        finally:
            await refused.aclose()
            await plain.aclose()
    assert "priority" not in fake.requests[-1].body
    assert response.usage.output_tokens > 0


async def test_a_full_queue_is_retryable() -> None:
    async with FakeSGLangServer(max_queued_requests=0) as fake:
        target = Target(fake.base_url, fake.served_model_name, fake)
        backend = target.backend()
        try:
            with pytest.raises(LLMUnavailable, match="queue is full"):
                await backend.chat(target.request("hi"), lambda _: None)
        finally:
            await backend.aclose()


@pytest.mark.parametrize(
    ("incremental", "live_reference"), [(False, False), (True, False), (False, True)]
)
async def test_reads_cumulative_and_incremental_streams(
    incremental: bool, live_reference: bool
) -> None:
    async with FakeSGLangServer(
        incremental_streaming=incremental, live_reference=live_reference, eos=False
    ) as fake:
        target = Target(fake.base_url, fake.served_model_name, fake)
        backend = target.backend()
        try:
            text, last, _ = await collect(backend, target.request("hello there", 12))
        finally:
            await backend.aclose()
    prompt = fake.tokenizer.chat([{"role": "user", "content": "hello there"}])
    assert last.tokens == fake.uninterrupted(prompt, 12)
    assert text == fake.tokenizer.decode(last.tokens)


async def test_sends_what_sglang_accepts() -> None:
    """Every field the backend sends is one SGLang's request structs define (the fake refuses
    any other with SGLang's contract error)."""
    async with FakeSGLangServer() as fake:
        target = Target(fake.base_url, fake.served_model_name, fake)
        backend = target.backend()
        request = LLMRequest.model_validate(
            {
                "model": target.model,
                "messages": [{"role": "user", "content": "x"}],
                "sampling": {
                    "max_tokens": 5,
                    "temperature": 0.5,
                    "top_p": 0.9,
                    "stop": ["."],
                    "seed": 7,
                },
                "response_format": {"name": "thing", "json_schema": {"type": "object"}},
            }
        )
        try:
            await backend.chat(
                request, lambda _: None, None, Placement(request_id="r1", priority=3)
            )
        finally:
            await backend.aclose()
    body = fake.requests[-1].body
    assert body["rid"] == "r1" and body["priority"] == 3 and body["stream"] is True
    assert body["sampling_params"] == {
        "max_new_tokens": 5, "temperature": 0.5, "top_p": 0.9, "stop": ["."],
        "sampling_seed": 7, "json_schema": '{"type": "object"}',
    }  # fmt: skip


CALCULATOR = ToolSpec(
    name="calculator",
    description="Evaluate arithmetic.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)


def tool_request(model: str, max_tokens: int = 40) -> LLMRequest:
    return LLMRequest.model_validate(
        {
            "model": model,
            "messages": [{"role": "user", "content": "six times seven?"}],
            "sampling": {"max_tokens": max_tokens, "temperature": 0.0},
            "tool_specs": [CALCULATOR.model_dump()],
            "tool_choice": "required",
        }
    )


async def test_native_tool_calls_come_from_the_servers_template_and_parser() -> None:
    """The tools go into the chat template through `/tokenize`; the finished text goes through
    `/parse_function_call` with the parser the server reports; calls get ids unique per rid."""
    async with FakeSGLangServer(replies=calls_then_answers, tool_call_parser="qwen") as fake:
        backend = SGLangBackend("under-test", fake.base_url)
        try:
            response = await backend.chat(
                tool_request(fake.served_model_name), lambda _: None, None,
                Placement(request_id="run-1-llm-3-1"),
            )  # fmt: skip
            again = await backend.chat(
                tool_request(fake.served_model_name), lambda _: None, None,
                Placement(request_id="run-1-llm-4-1"),
            )  # fmt: skip
        finally:
            await backend.aclose()
    [call] = response.tool_calls
    assert (call.name, call.arguments) == ("calculator", '{"expression": "6*7"}')
    assert call.id.startswith("call-") and call.id.endswith("-0")
    assert again.tool_calls[0].id != call.id
    assert response.text == "Let me compute."
    tokenized = fake.tokenize_requests[0]
    assert tokenized["tools"] == [CALCULATOR.wire()] and tokenized["tool_choice"] == "required"
    assert [body["tool_call_parser"] for body in fake.parse_requests] == ["qwen", "qwen"]


async def test_native_tool_calls_are_parsed_once_the_sliced_generation_ends() -> None:
    """A time slice returns raw text and asks no parser; the resumed end carries the calls,
    and its ids are exactly those of an uninterrupted generation's."""
    async with FakeSGLangServer(replies=calls_then_answers, tool_call_parser="qwen") as fake:
        backend = SGLangBackend("under-test", fake.base_url, tool_call_parser="qwen")
        request = tool_request(fake.served_model_name)
        try:
            _, first, sliced = await collect(backend, request, placement=Placement(slice_tokens=2))
            assert sliced.finish_reason == SLICE_END and not sliced.tool_calls
            assert fake.parse_requests == []
            _, _, resumed = await collect(backend, request, resume=first)
        finally:
            await backend.aclose()
    assert [(c.name, c.arguments) for c in resumed.tool_calls] == [
        ("calculator", '{"expression": "6*7"}')
    ]
    assert resumed.resumed_from == 2 and resumed.finish_reason == "stop"


async def test_native_tools_on_a_server_without_a_parser_name_the_flag() -> None:
    async with FakeSGLangServer(replies=calls_then_answers) as fake:
        backend = SGLangBackend("under-test", fake.base_url)
        try:
            with pytest.raises(LLMBadRequest, match="--tool-call-parser"):
                await backend.chat(tool_request(fake.served_model_name), lambda _: None)
        finally:
            await backend.aclose()


async def test_a_call_the_kernel_cannot_take_leaves_the_text_as_the_reply() -> None:
    """Arguments over the kernel's limit: as with constrained decoding, the text stands."""
    huge = "1+" * (MAX_TOOL_ARGUMENTS // 2) + "1"
    reply = (
        f'<tool_call> {{"name":"calculator","arguments":{{"expression":"{huge}"}}}} </tool_call>'
    )
    async with FakeSGLangServer(replies=lambda _: reply, tool_call_parser="qwen") as fake:
        backend = SGLangBackend("under-test", fake.base_url)
        try:
            response = await backend.chat(tool_request(fake.served_model_name), lambda _: None)
        finally:
            await backend.aclose()
    assert response.tool_calls == [] and response.text == reply


def test_the_fake_servers_prefix_cache_shares_prefixes_and_evicts_the_least_recently_used() -> None:
    """The simulator's cache is bounded in tokens, as a KV pool is (the benchmarks rely on it)."""
    cache = PrefixCache(capacity=30)
    system = list(range(100, 110))
    first, second = system + list(range(10)), system + list(range(20, 30))
    cache.insert(first)
    cache.insert(second)
    assert cache.size == 30  # the shared ten tokens are held once
    assert (cache.match(first), cache.match(second[:15])) == (20, 15)
    assert cache.match([*system, 99]) == 10
    cache.match(second)  # `first` is now the least recently used
    cache.insert(system + list(range(40, 45)))
    assert cache.size == 25
    assert (cache.match(first), cache.match(second)) == (10, 20)
    unlimited = PrefixCache()
    for n in range(50):
        unlimited.insert([n] * 10)
    assert unlimited.size == 500 and unlimited.match([7] * 10) == 10
