"""Tools used by the tests, registered by `tools_settings` next to the built-in ones."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from kernos import ToolContext, tool

#: Where the irreversible tools leave their effects: one line per execution.
EFFECTS = Path(__file__).parent / ".effects"
#: Opened by a test to let `held` calls finish.
release = asyncio.Event()
#: `held` calls running now, and the most ever at once.
running = {"now": 0, "most": 0}


class Order(BaseModel):
    """A nested argument type, to show in a tool's schema."""

    item: str
    quantity: int = Field(ge=1, le=100)


@tool(irreversible=True, timeout_s=10.0)
async def charge(
    account: str, cents: Annotated[int, Field(gt=0)], context: ToolContext, hold_s: float = 0.0
) -> str:
    """Charge an account: irreversible, never run twice for one call."""
    path = EFFECTS / context.caller.tenant
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as effects:
        effects.write(f"{account} {cents} {context.idempotency_key} {context.attempt}\n")
    await asyncio.sleep(hold_s)  # the effect is done; the attempt has not reported back
    return f"charged {cents} to {account}"


@tool(irreversible=True, idempotent=True, timeout_s=10.0)
async def keyed_charge(account: str, cents: int, context: ToolContext, hold_s: float = 0.0) -> str:
    """Charge with an idempotency key the payment system deduplicates on: safe to repeat."""
    path = EFFECTS / f"{context.caller.tenant}-keyed"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as effects:
        effects.write(f"{account} {cents} {context.idempotency_key} {context.attempt}\n")
    await asyncio.sleep(hold_s if context.attempt == 1 else 0)  # only the first attempt stalls
    return f"charged {cents} to {account} with key {context.idempotency_key}"


@tool(concurrency=1, timeout_s=60.0)
async def held() -> str:
    """Wait until the test opens `release`; one at a time."""
    running["now"] += 1
    running["most"] = max(running["most"], running["now"])
    try:
        await release.wait()
    finally:
        running["now"] -= 1
    return "released"


@tool(timeout_s=0.5)
async def sleepy(seconds: float) -> str:
    """Sleep past its own timeout."""
    await asyncio.sleep(seconds)
    return "awake"


@tool
def order(orders: list[Order], note: str | None = None) -> dict[str, int]:
    """Place orders; returns the quantity per item."""
    return {o.item: o.quantity for o in orders}


@tool
def shout(text: str) -> str:
    """Repeat the text louder (a result can be made too large)."""
    return text.upper()


@tool
def broken() -> str:
    """Fail the way a buggy tool does."""
    raise RuntimeError("the tool's own bug")


TEST_TOOLS = {
    name: f"tests.tools:{name}"
    for name in ["charge", "keyed_charge", "held", "sleepy", "order", "shout", "broken"]
}
