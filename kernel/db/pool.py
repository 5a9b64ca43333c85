"""The kernel's connection pool (psycopg 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection, OperationalError
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from kernos.kernel.config import DatabaseSettings
from kernos.kernel.errors import ConfigError, KernosError

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]
Connection = AsyncConnection[DictRow]


@asynccontextmanager
async def connection(pool: Pool, within: Connection | None = None) -> AsyncIterator[Connection]:
    """`within` (a connection whose transaction the caller holds), else one of `pool`'s."""
    if within is not None:
        yield within
        return
    async with pool.connection() as conn:
        yield conn


def unreachable(exc: OperationalError, setting: str) -> KernosError:
    """The error for a refused connection: libpq's reason on one line, and the setting.

    libpq names the server and the file at fault: `root certificate file ... does not exist`,
    `certificate verify failed`, `server certificate for "db" does not match host name ...`,
    or the server's `connection requires a valid client certificate`.
    """
    reason = "; ".join(" ".join(line.split()) for line in str(exc).splitlines() if line.strip())
    return KernosError(f"cannot connect to PostgreSQL ({setting}): {reason or type(exc).__name__}")


def dsn(settings: DatabaseSettings) -> str:
    """The kernel's DSN, or ConfigError saying where to set it."""
    if settings.dsn is None:
        raise ConfigError(
            "no database DSN: set [database] dsn in kernos.toml or KERNOS_DATABASE__DSN"
        )
    return settings.dsn.get_secret_value()


def operator_dsn(settings: DatabaseSettings) -> str:
    """The operator's DSN, or ConfigError saying what needs it and where to set it."""
    if settings.operator_dsn is None:
        raise ConfigError(
            "decisions over the record (approving without an API key, budgets, rules, API keys) "
            "are the operator's: set [database] operator_dsn or KERNOS_DATABASE__OPERATOR_DSN "
            "(on the embedded stack, `kernos up` writes it to .kernos/operator.toml)"
        )
    return settings.operator_dsn.get_secret_value()


async def open_pool(settings: DatabaseSettings, *, operator: bool = False) -> Pool:
    """Open a pool on the kernel's DSN (or the operator's); rows come back as dicts."""
    url = operator_dsn(settings) if operator else dsn(settings)
    # One plain connection first: a wrong password or host, or a certificate refused either
    # way, fails now with the server's or libpq's reason, rather than after the pool's timeout
    # of retrying in the background.
    try:
        probe = await AsyncConnection.connect(url, connect_timeout=10)
    except OperationalError as exc:
        setting = "[database] operator_dsn" if operator else "[database] dsn"
        raise unreachable(exc, setting) from exc
    await probe.close()
    pool: Pool = AsyncConnectionPool(
        url,
        # The operator's pool serves one command's or script's decisions at a time.
        min_size=min(settings.pool_min, 1) if operator else settings.pool_min,
        max_size=2 if operator else settings.pool_max,
        kwargs={"row_factory": dict_row, "autocommit": True},
        connection_class=AsyncConnection[DictRow],
        open=False,
    )
    await pool.open(wait=True, timeout=15)
    return pool
