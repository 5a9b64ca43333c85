"""What the `kernos` commands share: JSON output and a client for the command's duration."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from kernos.client import KernosClient
from kernos.kernel.config import Settings


def print_json(data: Any) -> None:
    """Print `data` as indented JSON."""
    print(json.dumps(data, indent=2, default=str))


async def with_client(settings: Settings, body: Callable[[KernosClient], Awaitable[int]]) -> int:
    """Run `body` with a connected client, closed afterwards."""
    client = await KernosClient.connect(settings)
    try:
        return await body(client)
    finally:
        await client.close()
