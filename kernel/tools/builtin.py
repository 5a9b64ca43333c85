"""Tools every kernel registers unless settings say otherwise: arithmetic, HTTP, files."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from kernos.kernel.errors import InvalidRequest
from kernos.kernel.paths import check_path
from kernos.kernel.tools import ToolContext, tool

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_MAX_EXPONENT = 1000
_MAX_MAGNITUDE = 10**100


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise InvalidRequest(f"{node.value!r} is not a number")
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise InvalidRequest(f"exponent {right} is over {_MAX_EXPONENT}")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex) or abs(value) > _MAX_MAGNITUDE:
            raise InvalidRequest("the result is not a real number under 1e100")
        return value  # type: ignore[no-any-return]
    raise InvalidRequest(
        f"{ast.unparse(node)!r} is not arithmetic: use numbers, + - * / // % ** and parentheses"
    )


@tool(timeout_s=5.0, concurrency=8, idempotent=True)
def calculator(
    expression: Annotated[str, Field(max_length=1000, description="e.g. (2 + 3) * 4 / 7")],
) -> int | float:
    """Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise InvalidRequest(f"{expression!r} is not an expression: {exc.msg}") from None
    try:
        return _evaluate(tree.body)
    except ZeroDivisionError:
        raise InvalidRequest("division by zero") from None


def _allowed(host: str, allow: list[str]) -> bool:
    return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in allow)


@tool(timeout_s=20.0, concurrency=4, idempotent=True)
async def http_fetch(
    url: Annotated[str, Field(max_length=2048, description="an http(s) URL on an allowed host")],
    context: ToolContext,
) -> str:
    """Fetch a web page or API response by GET; only hosts on the kernel's allow-list."""
    settings = context.settings.tools
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest(f"{url!r} is not an http(s) URL")
    if not _allowed(host, settings.http_allow):
        allowed = ", ".join(settings.http_allow) or "none"
        raise InvalidRequest(f"host {host!r} is not allowed ([tools] http_allow: {allowed})")
    # No redirects: each would be a host to check again, and the answer says where it points.
    async with (
        httpx.AsyncClient(follow_redirects=False, timeout=15.0) as client,
        client.stream("GET", url) as response,
    ):
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > settings.http_max_bytes:
                raise InvalidRequest(
                    f"the response is over {settings.http_max_bytes} bytes ([tools] http_max_bytes)"
                )
        text = body.decode(response.encoding or "utf-8", errors="replace")
        where = f" (Location: {response.headers['location']})" if response.is_redirect else ""
        return f"HTTP {response.status_code}{where}\n{text}"


@tool(timeout_s=10.0, concurrency=8, idempotent=True)
async def read_file(
    path: Annotated[str, Field(max_length=1024, description="a path in the agent's files")],
    context: ToolContext,
) -> str:
    """Read a text file from the agent's own files (the storage manager's namespace)."""
    if context.storage is None:
        raise InvalidRequest("file tools need the storage manager on this worker")
    who = context.caller
    _, content = await context.storage.read(
        tenant=who.tenant, agent=who.agent, path=check_path(path), version=None
    )
    return content.decode("utf-8", errors="replace")


@tool(timeout_s=10.0, concurrency=8, idempotent=True)
async def write_file(
    path: Annotated[str, Field(max_length=1024, description="a path in the agent's files")],
    content: Annotated[str, Field(description="the whole new text of the file")],
    context: ToolContext,
) -> dict[str, Any]:
    """Write a text file in the agent's own files; each write is a new, recoverable version."""
    if context.storage is None:
        raise InvalidRequest("file tools need the storage manager on this worker")
    who = context.caller
    # Keyed by the call: a retried attempt finds its version and writes no second one.
    version = await context.storage.write(
        tenant=who.tenant, agent=who.agent, path=check_path(path), content=content.encode(),
        expected_version=None, written_by=f"tool:{context.idempotency_key}",
    )  # fmt: skip
    return {"path": version.path, "version": version.version, "size": version.size}
