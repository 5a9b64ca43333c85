"""A fake SGLang server: its native HTTP API, its fields and its errors, on a simulated engine.

Read from SGLang 0.5's source (`http_server.py`, `io_struct.GenerateReqInput`,
`SamplingParams`, the tokenizer manager's `meta_info` and context-length checks, `FINISH_*`
reasons, `/v1/loads`). What the kernel's backend relies on is answered as SGLang answers it:

- `POST /tokenize` `{model, messages}` -> `{tokens, count, max_model_len}` (chat template applied);
- `POST /detokenize` `{tokens}` -> `{text}`;
- `POST /generate` with `input_ids` or `text`, `sampling_params`, `rid`, `priority`, `stream`:
  streamed chunks `{text, output_ids, meta_info}`, cumulative unless `incremental_streaming`
  (`--incremental-streaming-output`), then `data: [DONE]`; a bad request in a stream is an
  `{"error": {...}}` chunk with HTTP 200, as SGLang sends it; a field outside the contract is a
  400 before streaming;
- `POST /abort_request` `{rid}`; `GET /health`, `/model_info`, `/get_model_info`, `/v1/models`,
  `/v1/loads`, `/metrics`;
- native tool calling: `/tokenize` takes `tools` and `tool_choice` into the template, and
  `POST /parse_function_call` `{text, tools, tool_call_parser}` -> `{normal_text, calls}` with
  `calls` as `ToolCallItem`s (`tool_index`, `name`, `parameters` as JSON text) for the `qwen`
  parser's `<tool_call>{...}</tool_call>` blocks; calls to undefined tools are skipped, as
  SGLang skips them; any other parser name is a 400. `/model_info` names the parser the server
  runs (`tool_call_parser`).

The engine is a small continuous-batching model: up to `max_running_requests` generate together,
each step costs `step_s + step_per_request_s * batch` plus prefill of uncached prompt tokens, a
radix prefix cache holds finished sequences (`cached_tokens`; at most `cache_tokens` tokens,
least recently used leaves evicted first, as SGLang's `RadixCache` evicts when its KV pool
fills), and waiting requests are ordered by priority (lower first, as with
`--schedule-low-priority-values-first`) when priority scheduling is on. The model is
deterministic: each next token depends only on the previous one, so a generation resumed from
its ids continues exactly as it would have. A test can script the
model's answers instead (`replies`: the prompt's text to a reply); a scripted reply resumes
exactly too, from the part of it already generated.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from kernos.testing.fake_http import (
    EventStream,
    JSONResponse,
    MiniHTTPServer,
    Request,
    TextResponse,
)

EOS, BOS = 1, 2
ASSISTANT = "<assistant>"
_SPECIAL = {0: "<pad>", EOS: "<eos>", BOS: "<bos>"}
_VOCAB = 1000

#: `GenerateReqInput` fields the fake understands; any other top-level field is refused.
_GENERATE_FIELDS = {
    "text", "input_ids", "sampling_params", "rid", "stream", "priority", "return_logprob",
    "log_metrics", "return_text_in_logprobs", "custom_labels", "routing_key", "extra_key",
}  # fmt: skip
_SAMPLING_FIELDS = {
    "max_new_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "stop_token_ids",
    "ignore_eos", "json_schema", "regex", "ebnf", "sampling_seed", "n", "frequency_penalty",
    "presence_penalty", "repetition_penalty", "min_new_tokens", "skip_special_tokens",
    "no_stop_trim", "spaces_between_special_tokens",
}  # fmt: skip


def next_token(previous: int) -> int:
    """The model: a fixed successor for every token; some successors end the generation."""
    successor = (previous * 7 + 13) % (_VOCAB - 3) + 3
    return EOS if successor % 97 == 0 else successor


def calls_then_answers(prompt: str) -> str:
    """A scripted model for `replies`: a calculator call, then an answer.

    The call is in the `qwen` parser's format; the answer comes once the prompt holds its result.
    """
    if "<tool>" in prompt:
        return "it is 42"
    call = '{"name":"calculator","arguments":{"expression":"6*7"}}'
    return f"Let me compute. <tool_call> {call} </tool_call>"


class _Node:
    __slots__ = ("children", "key", "last_used", "parent")

    def __init__(self, key: tuple[int, ...], parent: _Node | None, last_used: int) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.last_used = last_used


class PrefixCache:
    """SGLang's radix cache in small: token sequences in a tree that stores a shared prefix once.

    It holds at most `capacity` tokens (None: no limit); past it, the least recently used leaves
    go first, whole, and a parent left without children becomes a leaf in its turn.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.size = 0
        self._root = _Node((), None, 0)
        self._clock = itertools.count(1)

    def match(self, ids: list[int]) -> int:
        """How many leading tokens of `ids` the cache holds; marks them used."""
        now = next(self._clock)
        node, matched = self._root, 0
        while matched < len(ids) and (child := node.children.get(ids[matched])) is not None:
            common = _common(child.key, ids, matched)
            child.last_used = now
            matched += common
            if common < len(child.key):
                break
            node = child
        return matched

    def insert(self, ids: list[int]) -> None:
        """Hold `ids`, then evict down to the capacity."""
        now = next(self._clock)
        node, done = self._root, 0
        while done < len(ids):
            child = node.children.get(ids[done])
            if child is None:
                node.children[ids[done]] = _Node(tuple(ids[done:]), node, now)
                self.size += len(ids) - done
                break
            common = _common(child.key, ids, done)
            if common < len(child.key):  # split the edge where the sequences part
                head = _Node(child.key[:common], node, now)
                child.key, child.parent = child.key[common:], head
                head.children[child.key[0]] = child
                node.children[head.key[0]] = head
                child = head
            child.last_used = now
            done += common
            node = child
        self._evict()

    def _evict(self) -> None:
        if self.capacity is None or self.size <= self.capacity:
            return
        leaves = [(n.last_used, id(n), n) for n in self._nodes() if not n.children]
        heapq.heapify(leaves)
        while self.size > self.capacity and leaves:
            _, _, leaf = heapq.heappop(leaves)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.key[0]]
            self.size -= len(leaf.key)
            if parent is not self._root and not parent.children:
                heapq.heappush(leaves, (parent.last_used, id(parent), parent))

    def _nodes(self) -> list[_Node]:
        found, pending = [], list(self._root.children.values())
        while pending:
            node = pending.pop()
            found.append(node)
            pending.extend(node.children.values())
        return found


def _common(key: tuple[int, ...], ids: list[int], start: int) -> int:
    n = 0
    for a, b in zip(key, itertools.islice(ids, start, None), strict=False):
        if a != b:
            break
        n += 1
    return n


class Tokenizer:
    """Words to ids and back; generated ids read as `w<id>`."""

    def __init__(self) -> None:
        self._words: dict[int, str] = {}

    def encode(self, text: str) -> list[int]:
        """One id a word (`w<n>` is id n)."""
        ids = []
        for word in text.split():
            if word.startswith("w") and word[1:].isdigit() and 3 <= int(word[1:]) < _VOCAB:
                ids.append(int(word[1:]))
                continue
            token = 3 + zlib.crc32(word.encode()) % (_VOCAB - 3)
            self._words[token] = word
            ids.append(token)
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        """The words of `ids`, special tokens left out unless asked for."""
        words = []
        for token in ids:
            if token in _SPECIAL:
                if not skip_special:
                    words.append(_SPECIAL[token])
                continue
            words.append(self._words.get(token, f"w{token}"))
        return " ".join(words)

    def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """The chat template's ids for `messages` (and the tools offered)."""
        ids = [BOS]
        if tools:
            names = " ".join(tool["function"]["name"] for tool in tools)
            ids += self.encode(f"<tools> {names} </tools>")
        for message in messages:
            calls = " ".join(
                "<tool_call> "
                + json.dumps(
                    {
                        "name": call["function"]["name"],
                        "arguments": json.loads(call["function"]["arguments"]),
                    },
                    separators=(",", ":"),
                )
                + " </tool_call>"
                for call in message.get("tool_calls") or []
            )
            ids += self.encode(f"<{message['role']}> {message['content']} {calls}")
        return ids + self.encode(ASSISTANT)


@dataclass
class GenerateRequest:
    """One request in the engine."""

    rid: str
    input_ids: list[int]
    max_new_tokens: int
    priority: int
    ignore_eos: bool
    arrival: float
    output_ids: list[int] = field(default_factory=list)
    cached_tokens: int = 0
    finish_reason: dict[str, Any] | None = None
    updates: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    aborted: bool = False
    script: list[int] | None = None
    """A scripted reply's ids still to generate (EOS last), or None for the successor chain."""


@dataclass
class Recorded:
    """What a `/generate` call asked for, for tests to check."""

    body: dict[str, Any]
    rid: str
    cached_tokens: int = 0
    output_tokens: int = 0
    received: float = field(default_factory=time.monotonic)
    """When the request arrived (`time.monotonic`); `finished` when its stream ended."""
    finished: float | None = None
    finish: str | None = None


class FakeSGLangServer:
    """An SGLang-shaped server on a simulated continuous-batching engine."""

    def __init__(
        self,
        *,
        served_model_name: str = "fake-model",
        context_length: int = 4096,
        max_running_requests: int = 8,
        step_s: float = 0.002,
        step_per_request_s: float = 0.0,
        prefill_per_token_s: float = 0.0,
        priority_scheduling: bool = True,
        incremental_streaming: bool = False,
        max_queued_requests: int | None = None,
        cache_tokens: int | None = None,
        eos: bool = True,
        live_reference: bool = False,
        replies: Callable[[str], str | None] | None = None,
        tool_call_parser: str | None = None,
        port: int = 0,
    ) -> None:
        self.served_model_name = served_model_name
        self.context_length = context_length
        self.max_running_requests = max_running_requests
        self.step_s = step_s
        self.step_per_request_s = step_per_request_s
        self.prefill_per_token_s = prefill_per_token_s
        self.priority_scheduling = priority_scheduling
        self.incremental_streaming = incremental_streaming
        self.max_queued_requests = max_queued_requests
        self.eos = eos
        self.live_reference = live_reference
        """Cumulative chunks report one token fewer in `completion_tokens` than they carry, as
        SGLang's do when its live output list is serialised after a further step."""
        """Whether the model ever ends a generation itself (otherwise only at the length)."""
        self.replies = replies
        """The model's answer to a prompt (its text), or None to keep the successor chain."""
        self.tool_call_parser = tool_call_parser
        """The parser `/model_info` reports (SGLang's resolved `--tool-call-parser`)."""
        self.tokenizer = Tokenizer()
        self.tokenize_requests: list[dict[str, Any]] = []
        self.parse_requests: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self.abort_requests: list[str] = []
        """The rids `/abort_request` was called with."""
        self.healthy = True
        self._waiting: list[GenerateRequest] = []
        self._running: list[GenerateRequest] = []
        self.cache = PrefixCache(cache_tokens)
        """The prefix cache; `cache_tokens` is the KV pool it may fill (None: unlimited)."""
        self._wake = asyncio.Event()
        self._engine: asyncio.Task[None] | None = None
        self._rids = itertools.count()
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.http = MiniHTTPServer(
            {
                ("GET", "/health"): self._health,
                ("GET", "/health_generate"): self._health,
                ("GET", "/model_info"): self._model_info,
                ("GET", "/get_model_info"): self._model_info,
                ("GET", "/v1/models"): self._models,
                ("GET", "/v1/loads"): self._loads,
                ("GET", "/metrics"): self._metrics,
                ("POST", "/tokenize"): self._tokenize,
                ("POST", "/v1/tokenize"): self._tokenize,
                ("POST", "/detokenize"): self._detokenize,
                ("POST", "/v1/detokenize"): self._detokenize,
                ("POST", "/generate"): self._generate,
                ("POST", "/abort_request"): self._abort,
                ("POST", "/parse_function_call"): self._parse_function_call,
            },
            port=port,
        )

    @property
    def base_url(self) -> str:
        """Its address, for a client."""
        return self.http.base_url

    async def start(self) -> FakeSGLangServer:
        """Listen and start the engine; itself, started."""
        await self.http.start()
        self._engine = asyncio.create_task(self._run_engine())
        return self

    async def stop(self) -> None:
        """Stop the engine and stop listening."""
        if self._engine is not None:
            self._engine.cancel()
            self._engine = None
        await self.http.stop()

    async def __aenter__(self) -> FakeSGLangServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def uninterrupted(self, input_ids: list[int], max_new_tokens: int) -> list[int]:
        """The ids the model generates from `input_ids` in one go (for checking resumes)."""
        out: list[int] = []
        previous = input_ids[-1]
        while len(out) < max_new_tokens:
            previous = next_token(previous)
            if previous == EOS and not self.eos:
                previous = next_token(previous)
            out.append(previous)
            if previous == EOS:
                break
        return out

    # The HTTP API.

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse(None, 200 if self.healthy else 503)

    async def _model_info(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "model_path": f"/models/{self.served_model_name}",
                "served_model_name": self.served_model_name,
                "tokenizer_path": f"/models/{self.served_model_name}",
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "tool_call_parser": self.tool_call_parser,
                "reasoning_parser": None,
            }
        )

    async def _models(self, request: Request) -> JSONResponse:
        model = {
            "id": self.served_model_name,
            "object": "model",
            "owned_by": "sglang",
            "max_model_len": self.context_length,
        }
        return JSONResponse({"object": "list", "data": [model]})

    def load(self) -> dict[str, Any]:
        """The engine's load now, as `/get_load` reports it: running and waiting requests."""
        total = self.prompt_tokens or 1
        return {
            "dp_rank": 0,
            "num_running_reqs": len(self._running),
            "num_waiting_reqs": len(self._waiting),
            "max_running_requests": self.max_running_requests,
            "cache_hit_rate": self.cached_prompt_tokens / total,
            "token_usage": 0.0,
        }

    async def _loads(self, request: Request) -> JSONResponse:
        return JSONResponse({"version": "fake", "loads": [self.load()]})

    async def _metrics(self, request: Request) -> TextResponse:
        load = self.load()
        labels = f'{{model_name="{self.served_model_name}"}}'
        return TextResponse(
            f"sglang:num_running_reqs{labels} {load['num_running_reqs']}\n"
            f"sglang:num_queue_reqs{labels} {load['num_waiting_reqs']}\n"
            f"sglang:cache_hit_rate{labels} {load['cache_hit_rate']}\n"
        )

    async def _tokenize(self, request: Request) -> JSONResponse:
        body = request.body or {}
        if ("prompt" in body) == ("messages" in body):
            return _error("Exactly one of 'prompt' or 'messages' must be provided.", 400)
        self.tokenize_requests.append(body)
        if "messages" in body:
            tokens = self.tokenizer.chat(body["messages"], body.get("tools"))
        else:
            tokens = self.tokenizer.encode(str(body["prompt"]))
        return JSONResponse(
            {"tokens": tokens, "count": len(tokens), "max_model_len": self.context_length}
        )

    async def _detokenize(self, request: Request) -> JSONResponse:
        body = request.body or {}
        tokens = body.get("tokens")
        if not isinstance(tokens, list):
            return _error("tokens must be a list of token ids", 400)
        return JSONResponse(
            {"text": self.tokenizer.decode(tokens, body.get("skip_special_tokens", True))}
        )

    async def _parse_function_call(self, request: Request) -> JSONResponse:
        body = request.body or {}
        self.parse_requests.append(body)
        parser = body.get("tool_call_parser")
        if parser not in ("qwen", "qwen25"):
            return JSONResponse({"detail": f"Unsupported tool_call_parser: {parser}"}, 400)
        text = str(body.get("text") or "")
        names = [tool["function"]["name"] for tool in body.get("tools") or []]
        start = text.find("<tool_call>")
        calls = []
        for block in re.findall(r"<tool_call>(.*?)</tool_call>", text, re.DOTALL):
            try:
                call = json.loads(block.strip())
            except json.JSONDecodeError:
                continue
            if call.get("name") not in names:
                continue  # SGLang skips calls to undefined tools
            calls.append(
                {
                    "tool_index": names.index(call["name"]),
                    "name": call["name"],
                    "parameters": json.dumps(call.get("arguments", {}), ensure_ascii=False),
                }
            )
        normal = text[:start].strip() if start != -1 else text
        return JSONResponse({"normal_text": normal, "calls": calls})

    async def _abort(self, request: Request) -> JSONResponse:
        body = request.body or {}
        rid = str(body.get("rid") or "")
        self.abort_requests.append(rid)
        for queued in [*self._waiting, *self._running]:
            if body.get("abort_all") or (rid and queued.rid.startswith(rid)):
                self._finish(queued, {"type": "abort", "message": "Aborted", "status_code": None})
                queued.aborted = True
        return JSONResponse(None)

    async def _generate(self, request: Request) -> JSONResponse | EventStream:
        body = request.body
        if not isinstance(body, dict):
            return _error("the request body must be a JSON object", 400, plain=True)
        unknown = sorted(set(body) - _GENERATE_FIELDS)
        if unknown:
            return _error(f"unknown field {unknown[0]!r} in GenerateRequest", 400, plain=True)
        params = dict(body.get("sampling_params") or {})
        bad = sorted(set(params) - _SAMPLING_FIELDS)
        if bad:
            return _error(f"SamplingParams got an unexpected keyword argument {bad[0]!r}", 400)
        if ("text" in body) == ("input_ids" in body):
            return _error("Either text, input_ids or input_embeds should be provided.", 400)
        input_ids = (
            [int(t) for t in body["input_ids"]]
            if "input_ids" in body
            else [BOS, *self.tokenizer.encode(str(body["text"]))]
        )
        max_new = int(params.get("max_new_tokens", 128))
        rid = str(body.get("rid") or f"fake-{next(self._rids)}")
        recorded = Recorded(body=body, rid=rid)
        self.requests.append(recorded)
        problem = self._check_length(input_ids, max_new)
        if problem is not None:
            if body.get("stream"):
                return EventStream(_one_error(problem))
            return _error(problem, 400)
        queued = GenerateRequest(
            rid=rid,
            input_ids=input_ids,
            max_new_tokens=max_new,
            priority=self._priority(body.get("priority")),
            ignore_eos=bool(params.get("ignore_eos")) or not self.eos,
            arrival=time.monotonic(),
            script=self._script(input_ids),
        )
        # A refused request is finished with SGLang's abort reason, which its stream reports.
        self._admit(queued, body.get("priority"))
        if body.get("stream"):
            return EventStream(
                self._events(queued, recorded), on_disconnect=lambda: self._drop(queued)
            )
        async for _ in self._events(queued, recorded):
            pass
        return JSONResponse(self._output(queued, cumulative=True))

    # The engine.

    def _script(self, input_ids: list[int]) -> list[int] | None:
        """The scripted reply's ids left to generate.

        The prompt runs to the last assistant tag; whatever follows it is the part of the reply
        generated before a resume.
        """
        if self.replies is None:
            return None
        [tag] = self.tokenizer.encode(ASSISTANT)
        if tag not in input_ids:
            return None
        cut = len(input_ids) - input_ids[::-1].index(tag)
        reply = self.replies(self.tokenizer.decode(input_ids[:cut]))
        if reply is None:
            return None
        ids = [*self.tokenizer.encode(reply), EOS]
        done = input_ids[cut:]
        return ids[len(done) :] if ids[: len(done)] == done else None

    def _check_length(self, input_ids: list[int], max_new: int) -> str | None:
        if len(input_ids) >= self.context_length:
            return (
                f"The input ({len(input_ids)} tokens) is longer than the model's context "
                f"length ({self.context_length} tokens)."
            )
        if len(input_ids) + max_new > self.context_length:
            return (
                "Requested token count exceeds the model's maximum context length of "
                f"{self.context_length} tokens. You requested a total of "
                f"{len(input_ids) + max_new} tokens: {len(input_ids)} tokens from the input "
                f"messages and {max_new} tokens for the completion."
            )
        return None

    def _priority(self, value: Any) -> int:
        if value is None or not self.priority_scheduling:
            return 2**62  # SGLang's default with low-values-first: after every explicit one
        return int(value)

    def _admit(self, queued: GenerateRequest, priority: Any) -> None:
        if priority is not None and not self.priority_scheduling:
            self._finish(
                queued,
                {
                    "type": "abort",
                    "status_code": 503,
                    "message": "Using priority is disabled for this server. Please send a new "
                    "request without a priority.",
                },
            )
            return
        if self.max_queued_requests is not None and len(self._waiting) >= self.max_queued_requests:
            self._finish(
                queued,
                {"type": "abort", "status_code": 503, "message": "The request queue is full."},
            )
            return
        self._waiting.append(queued)
        self._wake.set()

    def _drop(self, queued: GenerateRequest) -> None:
        """A client that goes away aborts its request (SGLang's abort task on disconnect)."""
        if queued.finish_reason is None:
            self._finish(queued, {"type": "abort", "message": "client disconnected"})
            queued.aborted = True

    def _finish(self, queued: GenerateRequest, reason: dict[str, Any]) -> None:
        queued.finish_reason = reason
        if queued in self._waiting:
            self._waiting.remove(queued)
        if queued in self._running:
            self._running.remove(queued)
        queued.updates.put_nowait(None)

    async def _run_engine(self) -> None:
        while True:
            if not self._waiting and not self._running:
                self._wake.clear()
                await self._wake.wait()
            prefill = 0
            order = sorted(self._waiting, key=lambda r: (r.priority, r.arrival))
            for queued in order[: max(0, self.max_running_requests - len(self._running))]:
                self._waiting.remove(queued)
                held = self.cache.match(queued.input_ids)
                queued.cached_tokens = min(held, len(queued.input_ids) - 1)
                self.prompt_tokens += len(queued.input_ids)
                self.cached_prompt_tokens += queued.cached_tokens
                prefill += len(queued.input_ids) - queued.cached_tokens
                self._running.append(queued)
            batch = len(self._running)
            await asyncio.sleep(
                self.step_s + self.step_per_request_s * batch + self.prefill_per_token_s * prefill
            )
            for queued in list(self._running):
                if queued.script:
                    token = queued.script[len(queued.output_ids)]
                else:
                    token = next_token((queued.output_ids or queued.input_ids)[-1])
                    if token == EOS and queued.ignore_eos:
                        token = next_token(token)
                queued.output_ids.append(token)
                if token == EOS:
                    self._finish(queued, {"type": "stop", "matched": EOS})
                elif len(queued.output_ids) >= queued.max_new_tokens:
                    self._finish(queued, {"type": "length", "length": queued.max_new_tokens})
                else:
                    queued.updates.put_nowait(None)
                if queued.finish_reason is not None:
                    self.cache.insert(queued.input_ids + queued.output_ids)

    def _output(
        self, queued: GenerateRequest, *, cumulative: bool, sent: int = 0
    ) -> dict[str, Any]:
        ids = queued.output_ids if cumulative else queued.output_ids[sent:]
        text = self.tokenizer.decode(queued.output_ids if cumulative else ids)
        if not cumulative and sent and text:
            text = " " + text
        return {
            "text": text,
            "output_ids": list(ids),
            "meta_info": {
                "id": queued.rid,
                "finish_reason": queued.finish_reason,
                "prompt_tokens": len(queued.input_ids),
                "completion_tokens": len(queued.output_ids),
                "cached_tokens": queued.cached_tokens,
                "weight_version": "default",
            },
        }

    async def _events(self, queued: GenerateRequest, recorded: Recorded) -> AsyncIterator[Any]:
        sent = 0
        while True:
            await queued.updates.get()
            finished = queued.finish_reason is not None
            if len(queued.output_ids) > sent or finished:
                output = self._output(queued, cumulative=not self.incremental_streaming, sent=sent)
                if self.live_reference and not finished and not self.incremental_streaming:
                    output["meta_info"]["completion_tokens"] -= 1
                yield output
                sent = len(queued.output_ids)
            if finished:
                break
        recorded.cached_tokens = queued.cached_tokens
        recorded.output_tokens = len(queued.output_ids)
        recorded.finished = time.monotonic()
        recorded.finish = str((queued.finish_reason or {}).get("type"))
        yield "[DONE]"


def _error(message: str, status: int, *, plain: bool = False) -> JSONResponse:
    # `/generate`'s contract gate answers `{"error": "<text>"}`; other errors carry an object.
    return JSONResponse({"error": message if plain else {"message": message}}, status)


async def _one_error(message: str) -> AsyncIterator[Any]:
    yield {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "code": 400,
            "retryable": False,
        }
    }
    yield "[DONE]"
