"""A client of the kernel's HTTP gateway: an API key and a URL, no other credentials.

For client apps off the kernel's hosts. `RemoteClient` submits runs as the key's user in the
key's tenant, follows them as they happen, waits for their results and cancels them;
`KernosClient` is the operator's client on the kernel's side (it holds the database's
credentials).

    async with RemoteClient("http://kernel:8780", api_key) as kernos:
        run_id = await kernos.submit({"agent": "echo", "task": "hello"})
        result = await kernos.result(run_id)
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import httpx
from pydantic import BaseModel

from kernos.client import RunFailed
from kernos.kernel.api_keys import AuthenticationFailed
from kernos.kernel.errors import (
    AccessDenied,
    InvalidRequest,
    KernosError,
    NotFound,
    RateLimited,
    RunNotFound,
)
from kernos.kernel.run_events import EVENT, RunEvent, RunFinished
from kernos.kernel.run_store import RunRecord
from kernos.kernel.syscalls import RunResult, RunSpec


class GatewayRun(BaseModel):
    """A run as the gateway shows it to the key's user."""

    run_id: str
    status: str
    agent: str
    tenant: str
    user: str
    created_at: str
    finished_at: str | None
    output: str | None

    @classmethod
    def of(cls, record: RunRecord) -> GatewayRun:
        """The record's public part."""
        return cls(
            run_id=record.run_id,
            status=record.status,
            agent=record.agent,
            tenant=record.tenant,
            user=record.user,
            created_at=record.created_at.isoformat(),
            finished_at=record.finished_at.isoformat() if record.finished_at else None,
            output=record.output,
        )


class GatewayRuns(BaseModel):
    """A page of the key's user's runs, newest first."""

    data: list[GatewayRun]
    next_before: str | None
    """Where the next page starts (`before=`); None: this is the last."""


class GatewayResult(BaseModel):
    """A finished run's result, or its failure."""

    status: str
    result: RunResult | None = None
    error_type: str | None = None
    message: str | None = None


#: Times in a row `RemoteClient.stream` reconnects to a broken event stream before it gives up.
RECONNECTS = 5


class GatewayError(KernosError):
    """The gateway refused a request for a reason the SDK has no error of its own for."""


class RemoteClient:
    """Submits and follows runs through the gateway, authenticated by an API key."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        """A client of the gateway at `url`, as the key's user.

        `verify` says how the gateway's certificate is checked: the system's CAs by default, or
        a CA file or SSL context of your own.
        """
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
            verify=verify,
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def submit(self, spec: RunSpec | dict[str, Any]) -> str:
        """Admit a run as the key's user; its id."""
        body = (
            spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, RunSpec) else spec
        )
        answer = await self._call("POST", "/v1/runs", json=body)
        return str(answer.json()["run_id"])

    async def get(self, run_id: str) -> GatewayRun:
        """The run's record as the gateway shows it."""
        return GatewayRun.model_validate((await self._call("GET", f"/v1/runs/{run_id}")).json())

    async def list_runs(
        self, *, status: str | None = None, agent: str | None = None, limit: int = 20,
        before: str | None = None,
    ) -> GatewayRuns:  # fmt: skip
        """The key's user's runs, newest first; pass `next_before` as `before` for the next page."""
        params = {"status": status, "agent": agent, "limit": limit, "before": before}
        given = {name: value for name, value in params.items() if value is not None}
        return GatewayRuns.model_validate(
            (await self._call("GET", "/v1/runs", params=given)).json()
        )

    async def result(self, run_id: str, timeout_s: float | None = None) -> RunResult:
        """Wait for the run to finish (long polls of up to a minute); RunFailed if it failed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = 50.0 if deadline is None else max(0.0, min(50.0, deadline - time.monotonic()))
            answer = await self._call(
                "GET", f"/v1/runs/{run_id}/result", params={"wait_s": wait}, timeout=wait + 30
            )
            outcome = GatewayResult.model_validate(answer.json())
            if outcome.status == "completed" and outcome.result is not None:
                return outcome.result
            if outcome.status == "failed":
                raise RunFailed(run_id, outcome.error_type or "Error", outcome.message or "")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} did not finish within {timeout_s} s")

    async def cancel(self, run_id: str) -> None:
        """Ask the run to stop."""
        await self._call("POST", f"/v1/runs/{run_id}/cancel")

    async def stream(self, run_id: str, *, after: int = 0) -> AsyncIterator[RunEvent]:
        """The run's events after the `after`-th, as they happen, until it finishes.

        A broken connection is resumed after the last event seen (`Last-Event-ID`), up to
        `RECONNECTS` times in a row; past that, GatewayError.
        """
        path = f"/v1/runs/{run_id}/events"
        failures = 0
        while True:
            try:
                async with self._http.stream(
                    "GET", path, headers={"Last-Event-ID": str(after)},
                    timeout=httpx.Timeout(None, connect=self._http.timeout.connect),
                ) as response:  # fmt: skip
                    if response.status_code >= 400:
                        await response.aread()
                        self._raise_for(response, path)
                    async for event in _server_sent(response.aiter_lines()):
                        failures = 0
                        after = event.seq
                        yield event
                        if isinstance(event, RunFinished):
                            return
                # Ended without the run's end: the run had ended (followed from past its
                # end), or something between cut the stream (a proxy, a gateway stopping).
                if (await self.get(run_id)).finished_at is not None:
                    return
                cut: Exception = GatewayError("the stream ended before the run")
            except httpx.TransportError as exc:
                cut = exc
            failures += 1
            if failures > RECONNECTS:
                raise GatewayError(
                    f"the event stream of run {run_id} broke {failures} times: {cut}"
                ) from cut
            await asyncio.sleep(min(5.0, 0.2 * 2**failures))

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayError(f"cannot reach the gateway at {self._http.base_url}: {exc}") from exc
        if response.status_code < 400:
            return response
        self._raise_for(response, path)

    @staticmethod
    def _raise_for(response: httpx.Response, path: str) -> NoReturn:
        """The SDK's error for the gateway's error answer."""
        try:
            error = response.json()["error"]
            kind, message = str(error["type"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            kind, message = "", f"the gateway answered {response.status_code}"
        if response.status_code == 401:
            raise AuthenticationFailed(message)
        if response.status_code == 403:
            raise AccessDenied(message)
        if response.status_code == 404 and kind != "RunNotFound":
            raise NotFound(message)
        if response.status_code == 404:
            raise RunNotFound(path.split("/")[3] if path.count("/") >= 3 else path)
        if response.status_code == 429:
            wait = response.headers.get("retry-after", "1")
            raise RateLimited(message, retry_after_s=float(wait) if wait.isdigit() else 1.0)
        if response.status_code in (400, 413):
            raise InvalidRequest(f"{kind}: {message}" if kind else message)
        raise GatewayError(f"the gateway answered {response.status_code}: {message}")


async def _server_sent(lines: AsyncIterator[str]) -> AsyncIterator[RunEvent]:
    """Run events from a stream of server-sent events (comments and unknown fields skipped)."""
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield EVENT.validate_json("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
