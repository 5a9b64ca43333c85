"""The kernel's HTTP gateway: admission for clients that hold an API key and nothing else.

A client of the gateway needs no database password and no Temporal access: it presents an API
key (`Authorization: Bearer kn_...`), and the gateway, which runs on the kernel's side with the
kernel's credentials, admits its runs as the key's user in the key's tenant. A spec cannot name
another user, and another tenant needs a rule allowing `run.submit` on `tenant:<other>` (audited
either way), exactly as for `KernosClient.connect(api_key=...)`.

    POST /v1/runs                      {"agent", "task", ...RunSpec}  -> 201 {"run_id", "status"}
    GET  /v1/runs/{id}                 -> the run (the key's user's runs only; others are 404)
    GET  /v1/runs/{id}/result?wait_s=N -> 200 the result or the failure, 202 still going
    POST /v1/runs/{id}/cancel          -> 202

Errors are JSON `{"error": {"type", "message"}}`: 401 for a missing, bad or revoked key (one
message for all), 403 for a refusal by policy, 400 for a spec the kernel refuses (naming the
field), 413 for a body over twice `max_task_bytes` (plus 64 KiB), 404 for a run the key may
not see, as for one that does not exist. A key sees its user's runs in its tenant, and in the
tenants its user may submit to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kernos.client import KernosClient, RunFailed
from kernos.kernel.access import Subject
from kernos.kernel.api_keys import ApiKeyStore, AuthenticationFailed, Principal
from kernos.kernel.config import Settings
from kernos.kernel.errors import AccessDenied, KernosError, RunNotFound, first_problem
from kernos.kernel.policy_store import load_access
from kernos.kernel.runs import RunRecord
from kernos.remote import GatewayResult, GatewayRun

#: Longest a result request waits for its run before answering 202.
MAX_WAIT_S = 60.0


class _Refused(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


Handler = Callable[[Request, KernosClient], Awaitable[JSONResponse]]


def gateway_app(settings: Settings) -> Starlette:
    """The gateway's ASGI app; it connects to Temporal and PostgreSQL when it starts."""
    operator: dict[str, KernosClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        operator["client"] = await KernosClient.connect(settings)
        try:
            yield
        finally:
            await operator["client"].close()

    def authenticated(handler: Handler) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                client = await _as_key_holder(operator["client"], request)
                return await handler(request, client)
            except _Refused as exc:
                return _error(exc.status, exc.kind, str(exc))
            except AuthenticationFailed as exc:
                return _error(401, "AuthenticationFailed", str(exc))
            except AccessDenied as exc:
                return _error(403, type(exc).__name__, str(exc))
            except RunNotFound as exc:
                return _error(404, "RunNotFound", str(exc))
            except ValidationError as exc:
                return _error(400, "InvalidRequest", first_problem(exc))
            except KernosError as exc:
                return _error(400, type(exc).__name__, str(exc))

        return endpoint

    return Starlette(
        routes=[
            Route("/v1/runs", authenticated(_submit), methods=["POST"]),
            Route("/v1/runs/{run_id}", authenticated(_show), methods=["GET"]),
            Route("/v1/runs/{run_id}/result", authenticated(_result), methods=["GET"]),
            Route("/v1/runs/{run_id}/cancel", authenticated(_cancel), methods=["POST"]),
        ],
        lifespan=lifespan,
    )


async def _as_key_holder(operator: KernosClient, request: Request) -> KernosClient:
    """A client acting as the request's API key; AuthenticationFailed without a good one."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationFailed("the gateway needs an API key: Authorization: Bearer <key>")
    principal = await ApiKeyStore(operator.pool).authenticate(key.strip())
    return KernosClient(operator.settings, operator.temporal, operator.pool, principal)


async def _submit(request: Request, client: KernosClient) -> JSONResponse:
    # The spec's task is capped by max_task_bytes; the rest of a spec is small.
    limit = client.settings.max_task_bytes * 2 + 64 * 1024
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _Refused(413, "PayloadTooLarge", f"the body is over {limit} bytes")
    try:
        body = json.loads(received)
    except ValueError as exc:
        raise _Refused(400, "InvalidRequest", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _Refused(400, "InvalidRequest", "the body must be a JSON object (a run spec)")
    handle = await client.submit(body)
    return JSONResponse({"run_id": handle.run_id, "status": "running"}, 201)


async def _own_run(request: Request, client: KernosClient) -> RunRecord:
    """The path's run, if it is the key's user's in the key's tenant; 404 otherwise."""
    run_id = request.path_params["run_id"]
    principal = client.principal
    assert principal is not None
    record = await client.runs.get(run_id)
    if not await _owns(client.settings, principal, record):
        # The same answer as for a run that does not exist: ids are not probed this way.
        raise RunNotFound(run_id)
    return record


async def _owns(settings: Settings, principal: Principal, record: RunRecord) -> bool:
    """The key's user's run: in the key's tenant, or in one the user may submit to."""
    if record.user != principal.user:
        return False
    if record.tenant == principal.tenant:
        return True
    access = await load_access(settings)
    subject = Subject("", record.tenant, principal.user, record.agent)
    return access.decide(subject, "run.submit", f"tenant:{record.tenant}").allowed


async def _show(request: Request, client: KernosClient) -> JSONResponse:
    record = await _own_run(request, client)
    return JSONResponse(GatewayRun.of(record).model_dump())


async def _result(request: Request, client: KernosClient) -> JSONResponse:
    record = await _own_run(request, client)
    try:
        wait_s = min(MAX_WAIT_S, max(0.0, float(request.query_params.get("wait_s", "0"))))
    except ValueError as exc:
        raise _Refused(400, "InvalidRequest", "wait_s must be a number of seconds") from exc
    if not record.finished and not wait_s:
        return JSONResponse(GatewayResult(status="running").model_dump(), 202)
    handle = client.handle(record.run_id)
    try:
        result = await asyncio.wait_for(
            handle.result(), timeout=None if record.finished else wait_s
        )
    except TimeoutError:
        return JSONResponse(GatewayResult(status="running").model_dump(), 202)
    except RunFailed as exc:
        failed = GatewayResult(status="failed", error_type=exc.error_type, message=exc.message)
        return JSONResponse(failed.model_dump())
    return JSONResponse(GatewayResult(status="completed", result=result).model_dump())


async def _cancel(request: Request, client: KernosClient) -> JSONResponse:
    record = await _own_run(request, client)
    await client.handle(record.run_id).cancel()
    return JSONResponse({"run_id": record.run_id, "status": "cancelling"}, 202)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status)
