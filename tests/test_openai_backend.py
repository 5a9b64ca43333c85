"""The OpenAI-compatible backend and the error mapping at the activity edge (unit)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from kernos import (
    ContextTooLong,
    LLMBadRequest,
    LLMRateLimited,
    LLMRequest,
    LLMUnavailable,
    Message,
    Sampling,
)
from kernos.activities.failures import to_application_error
from kernos.kernel.llm.base import SLICE_END, Placement, Snapshot
from kernos.kernel.llm.openai import OpenAIBackend, TextResume
from kernos.testing.fake_openai import FakeOpenAIServer

REQUEST = LLMRequest(model="m", messages=[Message(role="user", content="hi")])


def sse(*chunks: dict[str, object]) -> bytes:
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks)
    return (body + "data: [DONE]\n\n").encode()


def backend(handler: httpx.MockTransport) -> OpenAIBackend:
    return OpenAIBackend("test", "http://llm.test", transport=handler)


async def test_streams_text_and_usage() -> None:
    seen: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            content=sse(
                {"choices": [{"delta": {"content": "Hel"}}]},
                {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]},
                {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
            ),
        )

    progress: list[Snapshot] = []
    llm = backend(httpx.MockTransport(handle))
    response = await llm.chat(REQUEST, progress.append)
    await llm.aclose()
    assert response.text == "Hello"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 2)
    assert response.finish_reason == "stop"
    assert [snapshot.text for snapshot in progress] == ["Hel", "Hello"]
    assert seen[0]["stream"] is True
    assert "temperature" not in seen[0]  # unset sampling leaves the server's default


async def test_usage_missing_counts_chunks() -> None:
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, content=sse({"choices": [{"delta": {"content": "a"}}]}))
    )
    response = await backend(transport).chat(REQUEST, lambda _: None)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (0, 1)


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "retryable", "delay"),
    [
        (400, {"error": {"message": "bad temperature"}}, {}, LLMBadRequest, False, None),
        (
            400,
            {"error": {"message": "the request exceeds the available context size"}},
            {},
            ContextTooLong,
            False,
            None,
        ),
        (404, {"error": "model not found"}, {}, LLMBadRequest, False, None),
        (429, {"error": {"message": "slow down"}}, {"retry-after": "7"}, LLMRateLimited, True, 7),
        (500, {"error": {"message": "boom"}}, {}, LLMUnavailable, True, None),
        (503, {"error": {"message": "loading"}}, {"retry-after": "2"}, LLMUnavailable, True, 2),
    ],
)
async def test_http_errors_are_translated(
    status: int,
    body: dict[str, object],
    headers: dict[str, str],
    error: type[Exception],
    retryable: bool,
    delay: int | None,
) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status, json=body, headers=headers))
    with pytest.raises(error) as caught:
        await backend(transport).chat(REQUEST, lambda _: None)
    message = str(caught.value)
    assert f"answered {status}" in message
    failure = to_application_error(caught.value)  # type: ignore[arg-type]
    assert failure.type == error.__name__
    assert failure.non_retryable is (not retryable)
    assert failure.next_retry_delay == (timedelta(seconds=delay) if delay else None)
    reason = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    assert str(reason) in failure.message


async def test_unreachable_server_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(LLMUnavailable, match="cannot reach LLM server test"):
        await backend(httpx.MockTransport(refuse)).chat(REQUEST, lambda _: None)


async def test_malformed_stream_is_retryable() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=b"data: {nope\n\n"))
    with pytest.raises(LLMUnavailable, match="malformed stream chunk"):
        await backend(transport).chat(REQUEST, lambda _: None)


def continuing(seen: list[dict[str, Any]]) -> httpx.MockTransport:
    """A server that continues a final assistant message and stops at `max_tokens`."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(
            200,
            content=sse(
                {"choices": [{"delta": {"content": " wor"}}]},
                {"choices": [{"delta": {"content": "ld"}, "finish_reason": "length"}]},
                {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
            ),
        )

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("text_resume", ["prefill", "continue_final_message"])
async def test_resumes_by_text_and_cuts_at_the_slice(text_resume: TextResume) -> None:
    seen: list[dict[str, Any]] = []
    llm = OpenAIBackend(
        "test", "http://llm.test", transport=continuing(seen), text_resume=text_resume
    )
    progress: list[Snapshot] = []
    response = await llm.chat(
        REQUEST, progress.append, Snapshot(text="Hello", counted=3), Placement(slice_tokens=2)
    )
    await llm.aclose()
    body = seen[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert body["max_tokens"] == 2
    assert ("continue_final_message" in body) == (text_resume == "continue_final_message")
    assert response.text == "Hello world"
    assert response.finish_reason == SLICE_END
    assert (response.resumed_from, response.usage.output_tokens) == (3, 5)
    assert [(s.text, s.counted) for s in progress] == [("Hello wor", 4), ("Hello world", 5)]


async def test_without_text_resume_a_retry_starts_over_and_is_not_sliced() -> None:
    seen: list[dict[str, Any]] = []
    llm = OpenAIBackend("test", "http://llm.test", transport=continuing(seen))
    response = await llm.chat(
        REQUEST, lambda _: None, Snapshot(text="Hello", counted=3), Placement(slice_tokens=2)
    )
    await llm.aclose()
    assert [m["role"] for m in seen[0]["messages"]] == ["user"]
    assert "max_tokens" not in seen[0]
    assert response.text == " world"
    assert (response.finish_reason, response.usage.output_tokens) == ("length", 2)


async def test_a_generation_already_at_its_limit_sends_nothing() -> None:
    seen: list[dict[str, Any]] = []
    llm = OpenAIBackend(
        "test", "http://llm.test", transport=continuing(seen), text_resume="prefill"
    )
    request = REQUEST.model_copy(update={"sampling": Sampling(max_tokens=3)})
    response = await llm.chat(request, lambda _: None, Snapshot(text="Hello", counted=3))
    await llm.aclose()
    assert seen == []
    assert (response.text, response.finish_reason, response.usage.output_tokens) == (
        "Hello", "length", 3,
    )  # fmt: skip


async def test_the_fake_answers_whole_when_not_asked_to_stream() -> None:
    # (Temporal's OpenAI Agents plugin, which bench/run_cost.py measures, does not stream.)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with (
        FakeOpenAIServer(lambda body: "one two three") as fake,
        httpx.AsyncClient(base_url=fake.base_url) as http,
    ):
        answer = (await http.post("/v1/chat/completions", json=body)).json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "one two"}
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_the_fake_takes_a_tool_call_turn_without_content() -> None:
    # OpenAI's clients send an assistant turn of tool calls with `content: null`.
    messages = [
        {"role": "user", "content": "12 * 34?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "calculator", "arguments": "{}"},
        }]},
        {"role": "tool", "tool_call_id": "c1", "content": "408"},
    ]  # fmt: skip
    body = {"model": "m", "messages": messages}
    async with (
        FakeOpenAIServer(lambda body: "408 it is") as fake,
        httpx.AsyncClient(base_url=fake.base_url) as http,
    ):
        answer = (await http.post("/v1/chat/completions", json=body)).json()
    assert answer["choices"][0]["message"]["content"] == "408 it is"
    assert answer["usage"]["prompt_tokens"] == 4  # words of "12 * 34?" and "408"; null is 0
