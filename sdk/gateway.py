"""The kernel's HTTP gateway: admission for clients that hold an API key and nothing else.

A client of the gateway needs no database password and no Temporal access: it presents an API
key (`Authorization: Bearer kn_...`), and the gateway, which runs on the kernel's side with the
kernel's credentials, admits its runs as the key's user in the key's tenant. A spec cannot name
another user, and another tenant needs a rule allowing `run.submit` on `tenant:<other>` (audited
either way), exactly as for `KernosClient.connect(api_key=...)`.

    POST /v1/runs                      {"agent", "task", ...RunSpec}  -> 201 {"run_id", "status"}
    GET  /v1/runs?status=&agent=&limit=&before=  -> the key's user's runs, newest first, a page
    GET  /v1/runs/{id}                 -> the run (the key's user's runs only; others are 404)
    GET  /v1/runs/{id}/result?wait_s=N -> 200 the result or the failure, 202 still going
    POST /v1/runs/{id}/cancel          -> 202
    GET  /v1/runs/{id}/events          -> the run's events as server-sent events, live, until it
                                          ends; `Last-Event-ID` (or ?after=N) resumes after N
    POST /v1/chat/completions, GET /v1/models: OpenAI's API (`kernos.gateway_openai`)

Errors are JSON `{"error": {"type", "message"}}` (OpenAI's shape): 401 for a missing,
malformed, unknown, revoked or wrong key (one message for all), 403 for a refusal by policy,
400 for a spec the kernel refuses (naming the field) or a body that is not JSON or nests deeper than
`MAX_JSON_DEPTH`, 413 for a body over twice `max_task_bytes` (plus 64 KiB), 404 for a run the
key may not see, as for one that does not exist. A key sees its user's runs in its tenant, and
in the tenants its user may submit to (where it is `home/user`). Submissions and cancellations
are audited in the run's tenant's chain, naming the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from kernos.client import KernosClient, RunFailed
from kernos.kernel.access import Decision, Subject
from kernos.kernel.api_keys import (
    FAILED_AUTHENTICATION,
    ApiKeyStore,
    AuthenticationFailed,
    claimed_key_id,
)
from kernos.kernel.audit import AuditLog
from kernos.kernel.config import Settings
from kernos.kernel.errors import (
    AccessDenied,
    ConfigError,
    KernosError,
    NotFound,
    RateLimited,
    RunNotFound,
    first_problem,
)
from kernos.kernel.llm import chat_completions
from kernos.kernel.run_events import RunEvent
from kernos.kernel.run_store import RunRecord
from kernos.kernel.syscall_table import RUN_CANCEL
from kernos.remote import GatewayResult, GatewayRun, GatewayRuns

log = logging.getLogger(__name__)

#: Longest a result request waits for its run before answering 202.
MAX_WAIT_S = 60.0
#: How long a cancelled run may take to stop before it is terminated.
CANCEL_GRACE_S = 10.0
#: How long a stopping gateway lets open streams go on before it cuts them.
SHUTDOWN_GRACE_S = 5
#: What a stream of server-sent events is sent with: no cache, no buffering by a proxy.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Most runs one page of `GET /v1/runs` lists.
MAX_LISTED = 100
#: What `GET /v1/runs?status=` takes.
RUN_STATUSES = ("admitted", "running", "completed", "failed", "cancelled")
#: Longest an event stream stays silent: then a comment keeps proxies from closing it.
KEEPALIVE_S = 15.0
#: Terminations waiting on cancelled runs (kept so they are not collected mid-wait).
_ENDING: set[asyncio.Task[bool]] = set()
#: Deepest nesting of arrays and objects a body may have: a run spec is flat, and Python's
#: parser recurses, so a body of 100,000 brackets would otherwise fail the request with a 500.
MAX_JSON_DEPTH = 32
#: Strings and the rest of JSON, so the brackets that nest can be counted outside strings.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


class Refused(Exception):
    """A request the gateway answers with an error.

    Its status, the error's type, its code in OpenAI's terms, and headers.
    """

    def __init__(
        self, status: int, kind: str, message: str, *, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code
        self.headers = headers


Handler = Callable[[Request, KernosClient], Awaitable[Response]]


def gateway_config(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    client: KernosClient | None = None,
) -> uvicorn.Config:
    """How uvicorn serves the gateway: HTTPS with `[gateway] tls_cert`, else plain HTTP.

    Plain HTTP only on the loopback address, unless `allow_plain_http` says a TLS proxy is in
    front: ConfigError otherwise, before anything listens. `client`: the gateway's connection
    to Temporal and PostgreSQL, made already (`kernos gateway` connects before it listens, so a
    refused one is one line); the app closes it when it stops.
    """
    gateway = settings.gateway
    host = host or gateway.host
    cert, key = served_tls(settings, host)
    return uvicorn.Config(
        gateway_app(settings, client), host=host, port=port or gateway.port, log_level=log_level,
        ssl_certfile=cert, ssl_keyfile=key,
        # Open event streams would hold a shutdown forever: they are cut after this, and their
        # clients resume after the last event they saw.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )  # fmt: skip


def served_tls(settings: Settings, host: str) -> tuple[str | None, str | None]:
    """The certificate and key files the gateway serves HTTPS with (none: plain HTTP).

    ConfigError for a missing file, or for plain HTTP anywhere but loopback.
    """
    gateway = settings.gateway
    if gateway.tls_cert is not None and gateway.tls_key is not None:
        for what, path in (("tls_cert", gateway.tls_cert), ("tls_key", gateway.tls_key)):
            if not path.is_file():
                raise ConfigError(f"[gateway] {what}: no file at {path}")
        return str(gateway.tls_cert), str(gateway.tls_key)
    if not _loopback(host) and not gateway.allow_plain_http:
        raise ConfigError(
            f"the gateway would serve API keys over plain HTTP on {host}: set [gateway] "
            "tls_cert and tls_key, bind 127.0.0.1, or (behind a TLS proxy) allow_plain_http"
        )
    return None, None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gateway_app(settings: Settings, client: KernosClient | None = None) -> Starlette:
    """The gateway's ASGI app.

    It connects to Temporal and PostgreSQL when it starts, unless given its `client`; either
    way it closes the client when it stops.
    """
    operator: dict[str, KernosClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        operator["client"] = client or await KernosClient.connect(settings, process="gateway")
        try:
            yield
        finally:
            await operator["client"].close()

    rates = KeyRates(settings.gateway.key_requests_per_minute)

    def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                # A key out of requests is answered before its check costs the database a
                # lookup and a write; only a request it proves its own is counted.
                rates.check(_claimed_key_id(request))
                client = await _as_key_holder(operator["client"], request)
                assert client.principal is not None
                rates.take(client.principal.key_id)
                return await handler(request, client)
            except RateLimited as exc:
                wait = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
                return _error(429, "RateLimited", str(exc), wait, "rate_limit_exceeded")
            except Refused as exc:
                return _error(exc.status, exc.kind, str(exc), exc.headers, exc.code)
            except AuthenticationFailed as exc:
                return _error(401, "AuthenticationFailed", str(exc))
            except AccessDenied as exc:
                return _error(403, type(exc).__name__, str(exc))
            except NotFound as exc:
                return _error(404, type(exc).__name__, str(exc))
            except ValidationError as exc:
                return _error(400, "InvalidRequest", first_problem(exc))
            except ConfigError as exc:  # the kernel's settings or policy: not the client's
                return _error(500, type(exc).__name__, str(exc))
            except KernosError as exc:
                return _error(400, type(exc).__name__, str(exc))
            except Exception as exc:  # answered in the API's shape, and logged
                log.exception("gateway: %s %s failed", request.method, request.url.path)
                return _error(500, "internal_error", f"the gateway failed: {type(exc).__name__}")

        return endpoint

    # Here, not at the top: the OpenAI-compatible endpoints are built on this module's parts.
    from kernos.gateway_openai import chat_completion, models

    app = Starlette(
        routes=[
            Route("/v1/runs", authenticated(_submit), methods=["POST"]),
            Route("/v1/runs", authenticated(_list), methods=["GET"]),
            Route("/v1/runs/{run_id}", authenticated(_show), methods=["GET"]),
            Route("/v1/runs/{run_id}/result", authenticated(_result), methods=["GET"]),
            Route("/v1/runs/{run_id}/cancel", authenticated(_cancel), methods=["POST"]),
            Route("/v1/runs/{run_id}/events", authenticated(_events), methods=["GET"]),
            Route("/v1/chat/completions", authenticated(chat_completion), methods=["POST"]),
            Route("/v1/models", authenticated(models), methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.streams = OpenStreams(settings.gateway.key_streams)
    return app


class KeyRates:
    """Each API key's requests of this gateway process.

    A bucket of `per_minute` requests, filled at `per_minute` a minute (None: no limit).
    """

    def __init__(self, per_minute: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        #: Each key's requests left, and when that was counted.
        self._left: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str) -> None:
        """Count one request of `key_id`; RateLimited if it has none left."""
        left = self._refused_unless_left(key_id)
        if left is not None:
            self._left[key_id] = (left - 1, self._clock())

    def check(self, key_id: str | None) -> None:
        """RateLimited if `key_id` has no request left; nothing is counted."""
        if key_id is not None and key_id in self._left:
            self._refused_unless_left(key_id)

    def _refused_unless_left(self, key_id: str) -> float | None:
        """The key's requests left now (None: no limit); RateLimited if under one."""
        if self.per_minute is None:
            return None
        now = self._clock()
        left, then = self._left.get(key_id, (float(self.per_minute), now))
        left = min(float(self.per_minute), left + (now - then) * self.per_minute / 60)
        self._left[key_id] = (left, now)
        if left < 1:
            raise RateLimited(
                f"API key {key_id} made more than {self.per_minute} requests in a minute "
                "([gateway] key_requests_per_minute)",
                retry_after_s=(1 - left) * 60 / self.per_minute,
            )
        return left


class ClosingStream(StreamingResponse):
    """A streamed response that calls `on_close` however it ends.

    Sent whole, cut off by the client, or cancelled before its body began (where the body's
    own `finally` never runs).
    """

    def __init__(
        self, content: AsyncIterator[str], *, on_close: Callable[[], None],
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the response, then `on_close`."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


class OpenStreams:
    """Each API key's event streams open on this gateway process, up to `most` at once."""

    def __init__(self, most: int | None) -> None:
        self.most = most
        self._open: dict[str, int] = {}

    def open(self, key_id: str) -> Callable[[], None]:
        """Count a stream of `key_id` open (RateLimited past `most`); what closes it, once."""
        going = self._open.get(key_id, 0)
        if self.most is not None and going >= self.most:
            raise RateLimited(
                f"API key {key_id} has {going} event streams open, the most it may "
                f"([gateway] key_streams): close one",
                retry_after_s=1.0,
            )
        self._open[key_id] = going + 1
        closed = False

        def close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                self._open[key_id] -= 1
                if not self._open[key_id]:
                    del self._open[key_id]

        return close


def _bearer(request: Request) -> str | None:
    """The request's bearer token, if it sends one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _claimed_key_id(request: Request) -> str | None:
    """The key id the bearer token names, unchecked."""
    token = _bearer(request)
    return claimed_key_id(token) if token is not None else None


async def _as_key_holder(operator: KernosClient, request: Request) -> KernosClient:
    """A client acting as the request's API key; AuthenticationFailed without a good one."""
    token = _bearer(request)
    if token is None:
        raise AuthenticationFailed(FAILED_AUTHENTICATION)
    principal = await ApiKeyStore(operator.pool).authenticate(token)
    return KernosClient(
        operator.settings, operator.temporal, operator.pool, principal,
        feed=operator.event_feed(),
    )  # fmt: skip


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body; a 413 once it passes `limit` bytes (the rest is not read)."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise Refused(413, "PayloadTooLarge", f"the body is over {limit} bytes")
    return bytes(received)


async def _submit(request: Request, client: KernosClient) -> JSONResponse:
    # The spec's task is capped by max_task_bytes; the rest of a spec is small.
    limit = client.settings.max_task_bytes * 2 + 64 * 1024
    body = parse_json(await read_body(request, limit))
    if not isinstance(body, dict):
        raise Refused(400, "InvalidRequest", "the body must be a JSON object (a run spec)")
    handle = await client.submit(body)
    return JSONResponse({"run_id": handle.run_id, "status": "running"}, 201)


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> object:
    """The body's JSON; a 400 naming the problem if it is not JSON or nests too deep."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub(b'""', body)):
        depth += 1 if bracket[0] in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > max_depth:
                raise Refused(
                    400,
                    "InvalidRequest",
                    f"the body nests arrays or objects more than {max_depth} deep "
                    "(the gateway's limit, MAX_JSON_DEPTH)",
                )
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Refused(400, "InvalidRequest", f"the body is not JSON: {exc}") from None


async def _list(request: Request, client: KernosClient) -> JSONResponse:
    """The key's user's runs, newest first; `next_before` pages on (None: no more)."""
    principal = client.principal
    assert principal is not None
    query = request.query_params
    status = query.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise Refused(400, "InvalidRequest", f"status: one of {', '.join(RUN_STATUSES)}")
    try:
        limit = int(query.get("limit", "20"))
        before = datetime.fromisoformat(query["before"]) if "before" in query else None
    except ValueError as exc:
        raise Refused(
            400, "InvalidRequest", f"limit is a number of runs, before a time (ISO 8601): {exc}"
        ) from None
    if not 1 <= limit <= MAX_LISTED:
        raise Refused(400, "InvalidRequest", f"limit: from 1 to {MAX_LISTED}, not {limit}")
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    records = await client.runs.of_user(
        principal.tenant, principal.user, principal.qualified, status=status,
        agent=query.get("agent"), before=before, limit=limit,
    )  # fmt: skip
    # The query's rows of the key's tenant are its user's; another tenant's are seen where the
    # user may submit there (the policy read once per tenant, not per row).
    seen: dict[str, bool] = {principal.tenant: True}
    for record in records:
        if record.tenant not in seen:
            seen[record.tenant] = await client.owns(record)
    listed = GatewayRuns(
        data=[GatewayRun.of(record) for record in records if seen[record.tenant]],
        next_before=records[-1].created_at.isoformat() if len(records) == limit else None,
    )
    return JSONResponse(listed.model_dump())


async def _own_run(request: Request, client: KernosClient) -> RunRecord:
    """The path's run, if it is the key's user's in the key's tenant; 404 otherwise."""
    run_id = request.path_params["run_id"]
    assert client.principal is not None
    record = await client.runs.get(run_id)
    if not await client.owns(record):
        # The same answer as for a run that does not exist: ids are not probed this way.
        raise RunNotFound(run_id)
    return record


async def _show(request: Request, client: KernosClient) -> JSONResponse:
    record = await _own_run(request, client)
    return JSONResponse(GatewayRun.of(record).model_dump())


async def _result(request: Request, client: KernosClient) -> JSONResponse:
    record = await _own_run(request, client)
    try:
        wait_s = min(MAX_WAIT_S, max(0.0, float(request.query_params.get("wait_s", "0"))))
    except ValueError as exc:
        raise Refused(400, "InvalidRequest", "wait_s must be a number of seconds") from exc
    handle = client.handle(record.run_id)
    # Temporal says whether the run has closed: the record says so only once the end is learned.
    closed = await handle.closed()
    if not closed and not wait_s:
        return JSONResponse(GatewayResult(status="running").model_dump(), 202)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=None if closed else wait_s)
    except TimeoutError:
        return JSONResponse(GatewayResult(status="running").model_dump(), 202)
    except RunFailed as exc:
        failed = GatewayResult(status="failed", error_type=exc.error_type, message=exc.message)
        return JSONResponse(failed.model_dump())
    return JSONResponse(GatewayResult(status="completed", result=result).model_dump())


async def _events(request: Request, client: KernosClient) -> Response:
    """The run's events from after `Last-Event-ID` (or `?after=`) on, as they happen."""
    record = await _own_run(request, client)
    given = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        after = int(given)
    except ValueError:
        after = -1
    if after < 0:
        raise Refused(
            400, "InvalidRequest", f"Last-Event-ID (or after) is an event's number: {given!r}"
        )
    assert client.principal is not None
    close = request.app.state.streams.open(client.principal.key_id)
    events = client.stream(record.run_id, after=after)
    return ClosingStream(
        server_sent_events(events, KEEPALIVE_S), on_close=close, headers=STREAM_HEADERS
    )


async def server_sent_events(
    events: AsyncIterator[RunEvent], keepalive_s: float
) -> AsyncIterator[str]:
    """Each event as a server-sent event (`id` its number, `event` its kind, `data` its JSON).

    A comment goes out after `keepalive_s` without one, so proxies keep the stream open.
    """
    upcoming = aiter(events)
    next_event: asyncio.Future[RunEvent] | None = None
    try:
        while True:
            if next_event is None:
                next_event = asyncio.ensure_future(anext(upcoming))
            done, _ = await asyncio.wait([next_event], timeout=keepalive_s)
            if not done:
                yield ": keep-alive\n\n"
                continue
            try:
                event = next_event.result()
            except StopAsyncIteration:
                return
            next_event = None
            yield f"id: {event.seq}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
    finally:
        if next_event is not None:
            next_event.cancel()
        closing = getattr(upcoming, "aclose", None)
        if closing is not None:
            with contextlib.suppress(Exception):
                await closing()


async def _cancel(request: Request, client: KernosClient) -> JSONResponse:
    record = await _own_run(request, client)
    await cancel_run(client, record, "cancelled through the gateway")
    return JSONResponse({"run_id": record.run_id, "status": "cancelling"}, 202)


async def cancel_run(client: KernosClient, record: RunRecord, why: str) -> None:
    """Cancel the key holder's run, audited naming the key and `why`; terminated if it goes on."""
    principal = client.principal
    assert principal is not None
    await AuditLog(client.pool).record_operator(
        Subject(record.run_id, record.tenant, record.user, record.agent),
        RUN_CANCEL.name,
        f"run:{record.run_id}",
        Decision(True, None, why),
        key_id=principal.key_id,
    )
    handle = client.handle(record.run_id)
    await handle.cancel()
    # Agent code may ignore the cancellation: the run is terminated if it does.
    ending = asyncio.create_task(handle.terminate_unless_stopped(CANCEL_GRACE_S))
    _ENDING.add(ending)
    ending.add_done_callback(_ENDING.discard)


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None,
    code: str | None = None,
) -> JSONResponse:  # fmt: skip
    """An error as OpenAI's API shapes one (`type` and `message`, as every endpoint's)."""
    return JSONResponse(chat_completions.error_body(message, kind, code), status, headers=headers)
