"""Policies in PostgreSQL: Casbin's async SQLAlchemy adapter, and a watcher on LISTEN/NOTIFY.

The published PostgreSQL watcher needs psycopg2; this one is psycopg 3. The table's trigger
(migration 0013) notifies `kernos_policy` on every change, however it is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg
from casbin_async_sqlalchemy_adapter import Adapter
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kernos.kernel.access import PTYPES, AccessManager
from kernos.kernel.config import Settings
from kernos.kernel.db.pool import dsn

log = logging.getLogger(__name__)
CHANNEL = "kernos_policy"


class PolicyStore:
    """The rules table, through the adapter; closes its engine on `aclose`."""

    def __init__(self, dsn: str) -> None:
        # The engine's connections are psycopg's own, made from the DSN as libpq reads it: a
        # key=value DSN, and every libpq parameter (sslmode, sslrootcert, sslcert, ...), work
        # as for the kernel's pool, which SQLAlchemy's URL form would not promise.
        self.engine: AsyncEngine = create_async_engine(
            "postgresql+psycopg://",
            async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
            pool_size=2,
        )
        self.adapter = Adapter(self.engine)

    async def add(self, rule: list[str]) -> None:
        """Add one rule (type first, as in a CSV policy)."""
        kind, *fields = rule
        await self.adapter.add_policy("g" if kind == "g" else "p", PTYPES[kind], fields)

    async def remove(self, rule: list[str]) -> None:
        """Remove one rule (type first)."""
        kind, *fields = rule
        await self.adapter.remove_policy("g" if kind == "g" else "p", PTYPES[kind], fields)

    async def aclose(self) -> None:
        """Dispose of the engine."""
        await self.engine.dispose()


async def watch(dsn: str, on_change: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Call `on_change` after every change to the rules, until `stop`; reconnects on errors."""
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                await on_change()  # whatever changed while nobody listened
                while not stop.is_set():
                    # Wakes at least every second, to see `stop`.
                    async for _ in conn.notifies(timeout=1.0, stop_after=1):
                        await on_change()
        except (psycopg.Error, OSError) as exc:
            log.warning("policy watcher lost its connection (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def open_access(settings: Settings) -> tuple[AccessManager, PolicyStore | None]:
    """The access manager on the configured rules, and their store if they are in the database.

    The store stays open (to edit the rules, or to reload them on change); the caller closes it.
    """
    policy = settings.policy
    if policy.store == "file":
        return AccessManager(policy.resolved_model_path(), policy.resolved_policy_path()), None
    store = PolicyStore(dsn(settings.database))
    try:
        access = await AccessManager.from_database(policy.resolved_model_path(), store.adapter)
    except BaseException:
        await store.aclose()
        raise
    return access, store


async def load_access(settings: Settings) -> AccessManager:
    """The rules as they stand now, from the file or the database, for a one-off decision."""
    access, store = await open_access(settings)
    if store is not None:
        await store.aclose()
    return access
