"""What the `kernos` commands share: JSON output and a client for the command's duration."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernos.client import KernosClient
    from kernos.kernel.config import Settings


def print_json(data: Any) -> None:
    """Print `data` as indented JSON."""
    print(json.dumps(data, indent=2, default=str))


async def with_client(
    settings: Settings,
    body: Callable[[KernosClient], Awaitable[int]],
    api_key: str | None = None,
    *,
    traced: bool = False,
) -> int:
    """Run `body` with a connected client (as an API key's user, if given), closed afterwards.

    Its calls are traced only if `traced` (a command that starts work, not one that reads).
    """
    from kernos.client import KernosClient

    client = await KernosClient.connect(settings, api_key=api_key, traced=traced)
    try:
        return await body(client)
    finally:
        await client.close()
