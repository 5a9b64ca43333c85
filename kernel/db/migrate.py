"""Versioned schema migrations: numbered SQL files applied once each, in order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import AsyncConnection

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it serialises concurrent upgrades (two workers starting at once).
_LOCK_KEY = 0x6B65726E6F73


@dataclass(frozen=True)
class Migration:
    """One SQL file of the schema's history."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every packaged migration, in version order."""
    found = []
    for entry in resources.files("kernos.kernel.db").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


async def applied_versions(conn: AsyncConnection[Any]) -> list[int]:
    """Versions already applied to this database."""
    cursor = await conn.execute("SELECT to_regclass('kernos_schema_migrations') IS NOT NULL")
    row = await cursor.fetchone()
    if not row or not row[0]:
        return []
    cursor = await conn.execute("SELECT version FROM kernos_schema_migrations ORDER BY version")
    return [int(r[0]) for r in await cursor.fetchall()]


async def upgrade(dsn: str) -> list[str]:
    """Apply every pending migration, each in its own transaction; return what was applied."""
    done: list[str] = []
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS kernos_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = set(await applied_versions(conn))
            for migration in available():
                if migration.version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO kernos_schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                done.append(f"{migration.version:04d}_{migration.name}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done
