"""What the HTTP backends share: a client with the kernel's timeouts, and error translation."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator

import httpx

from kernos.kernel.errors import (
    ContextTooLong,
    LLMBadRequest,
    LLMError,
    LLMRateLimited,
    LLMUnavailable,
)

#: The longest wait a server's Retry-After may ask for.
MAX_RETRY_AFTER_S = 3600.0
_CONTEXT_WORDS = ("context length", "context window", "context size", "too long", "exceeds")


class ServerUnreachable(LLMUnavailable):
    """The connection to the server failed or broke.

    Its instance takes no work until its health probe passes; agents see an LLMUnavailable.
    """


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from LLM servers; Temporal's backoff applies
    # (A server's "inf" or "1e300" would overflow the retry's timedelta.)
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    if isinstance(error, str):
        return error[:500]
    return json.dumps(body)[:500]


def error_for_status(server: str, response: httpx.Response) -> LLMError:
    """Translate an HTTP error response into the kernel's LLM error."""
    status = response.status_code
    reason = _reason(response)
    message = f"{server} answered {status}: {reason}"
    if status == 429:
        return LLMRateLimited(message, retry_after_s=_retry_after(response))
    if status == 408 or status >= 500:
        return LLMUnavailable(message, retry_after_s=_retry_after(response))
    lowered = reason.lower()
    if "context" in lowered and any(word in lowered for word in _CONTEXT_WORDS):
        return ContextTooLong(message)
    return LLMBadRequest(message)


@contextlib.contextmanager
def transport_errors(where: str) -> Iterator[None]:
    """A request to `where` inside, whose transport failures become the kernel's LLM errors.

    A timeout is `LLMUnavailable` (retried); a connection that failed or broke is
    `ServerUnreachable`, which also takes the instance out of rotation until its probe passes.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise LLMUnavailable(f"{where} timed out: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise ServerUnreachable(f"cannot reach {where}: {exc}") from exc


class HTTPBackend:
    """A model server over HTTP; no retries of its own (Temporal's policy is the one loop)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        read_timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.name = name
        self.base_url = base_url.rstrip("/")
        #: How errors name this server.
        self.where = f"LLM server {name} ({self.base_url})"
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(connect=5.0, read=read_timeout_s, write=30.0, pool=30.0),
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP client's connections."""
        await self._client.aclose()
