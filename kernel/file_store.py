"""The storage manager's store: versioned files of a tenant/agent namespace in PostgreSQL.

Every write is a new version; contents are stored once per tenant, by SHA-256, so versions that
repeat a content (a rollback, the same file written twice) share it. Writes to one namespace
take a lock on it for their transaction, so the size limit and a file's version are checked
and moved together. A version is keyed by the syscall that wrote it: a retried write finds it
and writes nothing more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

from kernos.kernel.config import StorageSettings
from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import NotFound, PayloadTooLarge, VersionConflict
from kernos.kernel.memory_store import vector_literal
from kernos.kernel.syscalls import FileHit, FileInfo, FileVersion

_VERSION_COLUMNS = "path, version, size, sha256, action, created_at"


def _version(row: dict[str, Any]) -> FileVersion:
    return FileVersion.model_validate({key: row[key] for key in _VERSION_COLUMNS.split(", ")})


class StorageStore:
    """Reads and writes `files`, `file_versions` and `blobs`."""

    def __init__(self, pool: Pool, settings: StorageSettings) -> None:
        self._pool = pool
        self.settings = settings

    async def write(
        self,
        *,
        tenant: str,
        agent: str,
        path: str,
        content: bytes,
        expected_version: int | None,
        written_by: str,
    ) -> FileVersion:
        """A new version of `path` with `content` (once per `written_by`)."""
        if len(content) > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                f"the file {path!r}", len(content), self.settings.max_file_bytes,
                "[storage] max_file_bytes",
            )  # fmt: skip
        return await self._new_version(
            tenant=tenant, agent=agent, path=path, action="write", content=content,
            source_version=None, expected_version=expected_version, written_by=written_by,
        )  # fmt: skip

    async def rollback(
        self, *, tenant: str, agent: str, path: str, version: int, written_by: str
    ) -> FileVersion:
        """A new version of `path` with the content of its `version`; undeletes the file."""
        return await self._new_version(
            tenant=tenant, agent=agent, path=path, action="rollback", content=None,
            source_version=version, expected_version=None, written_by=written_by,
        )  # fmt: skip

    async def _new_version(
        self,
        *,
        tenant: str,
        agent: str,
        path: str,
        action: Literal["write", "rollback"],
        content: bytes | None,
        source_version: int | None,
        expected_version: int | None,
        written_by: str,
    ) -> FileVersion:
        where = {"tenant": tenant, "agent": agent, "path": path}
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"storage/{tenant}/{agent}",),
            )
            cursor = await conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM file_versions WHERE written_by = %s",
                (written_by,),
            )
            done = await cursor.fetchone()
            if done is not None:  # a retried syscall: its version is there already
                return _version(done)
            cursor = await conn.execute(
                "SELECT version FROM files"
                " WHERE tenant = %(tenant)s AND agent = %(agent)s AND path = %(path)s",
                where,
            )
            row = await cursor.fetchone()
            current = 0 if row is None else int(row["version"])
            if expected_version is not None and expected_version != current:
                raise VersionConflict(
                    f"{path!r} is at version {current}, not the expected {expected_version}: "
                    "another write got there first; read it again and retry"
                )
            if content is None:
                cursor = await conn.execute(
                    "SELECT sha256, size FROM file_versions WHERE tenant = %(tenant)s"
                    " AND agent = %(agent)s AND path = %(path)s AND version = %(version)s",
                    {**where, "version": source_version},
                )
                source = await cursor.fetchone()
                if source is None:
                    raise NotFound(f"{path!r} has no version {source_version}")
                sha256, size = str(source["sha256"]), int(source["size"])
            else:
                sha256, size = hashlib.sha256(content).hexdigest(), len(content)
                await self._check_namespace(conn, tenant, agent, sha256, size)
                await conn.execute(
                    "INSERT INTO blobs (tenant, sha256, size, content) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (tenant, sha256, size, content),
                )
            cursor = await conn.execute(
                f"INSERT INTO file_versions (tenant, agent, path, version, sha256, size, action,"
                f" written_by) VALUES (%(tenant)s, %(agent)s, %(path)s, %(version)s, %(sha)s,"
                f" %(size)s, %(action)s, %(by)s) RETURNING {_VERSION_COLUMNS}",
                {**where, "version": current + 1, "sha": sha256, "size": size,
                 "action": action, "by": written_by},
            )  # fmt: skip
            created = await cursor.fetchone()
            assert created is not None
            await conn.execute(
                "INSERT INTO files (tenant, agent, path, version) VALUES"
                " (%(tenant)s, %(agent)s, %(path)s, %(version)s)"
                " ON CONFLICT (tenant, agent, path) DO UPDATE SET version = EXCLUDED.version,"
                " deleted_at = NULL, updated_at = now()",
                {**where, "version": current + 1},
            )
        return _version(created)

    async def _check_namespace(
        self, conn: Any, tenant: str, agent: str, sha256: str, size: int
    ) -> None:
        cursor = await conn.execute(
            "SELECT coalesce(sum(size), 0) AS stored,"
            " bool_or(sha256 = %s) AS has_it FROM (SELECT DISTINCT sha256, size"
            " FROM file_versions WHERE tenant = %s AND agent = %s) AS contents",
            (sha256, tenant, agent),
        )
        row = await cursor.fetchone()
        stored, has_it = int(row["stored"]), bool(row["has_it"])
        total = stored if has_it else stored + size
        if total > self.settings.max_namespace_bytes:
            raise PayloadTooLarge(
                f"the namespace of agent {agent!r} in tenant {tenant!r}, with this file,",
                total, self.settings.max_namespace_bytes, "[storage] max_namespace_bytes",
            )  # fmt: skip

    async def read(
        self, *, tenant: str, agent: str, path: str, version: int | None
    ) -> tuple[FileVersion, bytes]:
        """A version of the file (its latest, unless deleted) and its content."""
        where = {"tenant": tenant, "agent": agent, "path": path, "version": version}
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT version, deleted_at FROM files"
                " WHERE tenant = %(tenant)s AND agent = %(agent)s AND path = %(path)s",
                where,
            )
            head = await cursor.fetchone()
            if head is None:
                raise NotFound(f"no file {path!r}")
            if version is None and head["deleted_at"] is not None:
                raise NotFound(
                    f"{path!r} was deleted at version {head['version']}: read a version, or "
                    "roll back to one to recover it"
                )
            cursor = await conn.execute(
                f"SELECT {', '.join('v.' + c for c in _VERSION_COLUMNS.split(', '))}, b.content"
                " FROM file_versions v JOIN blobs b ON b.tenant = v.tenant AND b.sha256 = v.sha256"
                " WHERE v.tenant = %(tenant)s AND v.agent = %(agent)s AND v.path = %(path)s"
                " AND v.version = coalesce(%(version)s, %(head)s)",
                {**where, "head": head["version"]},
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"{path!r} has no version {version}")
        return _version(row), bytes(row["content"])

    async def versions(self, *, tenant: str, agent: str, path: str) -> list[FileVersion]:
        """Every version of the file, oldest first."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM file_versions"
                " WHERE tenant = %s AND agent = %s AND path = %s ORDER BY version",
                (tenant, agent, path),
            )
            rows = await cursor.fetchall()
        if not rows:
            raise NotFound(f"no file {path!r}")
        return [_version(row) for row in rows]

    async def delete(self, *, tenant: str, agent: str, path: str) -> bool:
        """Mark the file deleted; False if it already was."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE files SET deleted_at = now(), updated_at = now()"
                " WHERE tenant = %s AND agent = %s AND path = %s AND deleted_at IS NULL"
                " RETURNING path",
                (tenant, agent, path),
            )
            if await cursor.fetchone() is not None:
                return True
            cursor = await conn.execute(
                "SELECT 1 FROM files WHERE tenant = %s AND agent = %s AND path = %s",
                (tenant, agent, path),
            )
            if await cursor.fetchone() is None:
                raise NotFound(f"no file {path!r}")
        return False

    async def purge(self, *, tenant: str, agent: str, path: str | None = None) -> tuple[int, int]:
        """Remove deleted files for good (or the one at `path`).

        Their versions go too, and the contents no version refers to any more. Returns how
        many files and contents were removed.
        """
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"storage/{tenant}/{agent}",),
            )
            where = {"tenant": tenant, "agent": agent, "path": path}
            cursor = await conn.execute(
                "DELETE FROM files WHERE tenant = %(tenant)s AND agent = %(agent)s"
                " AND deleted_at IS NOT NULL AND (%(path)s::text IS NULL OR path = %(path)s)"
                " RETURNING path",
                where,
            )
            paths = [row["path"] for row in await cursor.fetchall()]
            await conn.execute(
                "DELETE FROM file_versions WHERE tenant = %s AND agent = %s AND path = ANY(%s)",
                (tenant, agent, paths),
            )
            cursor = await conn.execute(
                "DELETE FROM blobs b WHERE b.tenant = %s AND NOT EXISTS (SELECT 1 FROM"
                " file_versions v WHERE v.tenant = b.tenant AND v.sha256 = b.sha256)"
                " RETURNING sha256",
                (tenant,),
            )
            contents = len(await cursor.fetchall())
        return len(paths), contents

    async def unembedded_contents(
        self, *, tenant: str, agent: str, limit: int
    ) -> list[tuple[str, bytes]]:
        """Contents of the namespace's live files not yet embedded: (sha256, bytes)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT DISTINCT b.sha256, b.content FROM files f JOIN file_versions v"
                " ON v.tenant = f.tenant AND v.agent = f.agent AND v.path = f.path"
                " AND v.version = f.version JOIN blobs b ON b.tenant = v.tenant"
                " AND b.sha256 = v.sha256 WHERE f.tenant = %s AND f.agent = %s"
                " AND f.deleted_at IS NULL AND b.searchable IS NULL LIMIT %s",
                (tenant, agent, limit),
            )
            rows = await cursor.fetchall()
        return [(str(row["sha256"]), bytes(row["content"])) for row in rows]

    async def set_embeddings(
        self, tenant: str, embedded: Sequence[tuple[str, Sequence[float] | None]]
    ) -> None:
        """Store contents' embeddings; None marks a content that cannot be searched."""
        async with self._pool.connection() as conn, conn.cursor() as cursor:
            await cursor.executemany(
                "UPDATE blobs SET embedding = %s::vector, searchable = %s"
                " WHERE tenant = %s AND sha256 = %s",
                [
                    (None if v is None else vector_literal(v), v is not None, tenant, sha)
                    for sha, v in embedded
                ],
            )

    async def search(
        self, *, tenant: str, agent: str, prefix: str, embedding: Sequence[float], k: int
    ) -> list[FileHit]:
        """The live files under `prefix` whose latest content is nearest, best first.

        A namespace's files are few next to the blobs of a tenant, so this is an exact scan
        of them, not an index search.
        """
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT f.path, f.version, 1 - (b.embedding <=> %s::vector) AS score,"
                " substring(b.content FROM 1 FOR 400) AS head"
                " FROM files f JOIN file_versions v ON v.tenant = f.tenant"
                " AND v.agent = f.agent AND v.path = f.path AND v.version = f.version"
                " JOIN blobs b ON b.tenant = v.tenant AND b.sha256 = v.sha256"
                " WHERE f.tenant = %s AND f.agent = %s AND f.deleted_at IS NULL"
                " AND starts_with(f.path, %s) AND b.searchable"
                " ORDER BY b.embedding <=> %s::vector LIMIT %s",
                (vector_literal(embedding), tenant, agent, prefix, vector_literal(embedding), k),
            )
            rows = await cursor.fetchall()
        return [
            FileHit(
                path=row["path"],
                version=row["version"],
                score=float(row["score"]),
                # The cut may split a character: what decodes of the first 400 bytes, trimmed.
                snippet=" ".join(bytes(row["head"]).decode("utf-8", "ignore").split())[:240],
            )
            for row in rows
        ]

    async def listing(
        self, *, tenant: str, agent: str, prefix: str, include_deleted: bool, limit: int
    ) -> list[FileInfo]:
        """The namespace's files whose path starts with `prefix`, by path."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT f.path, f.version, v.size, f.updated_at, f.deleted_at IS NOT NULL"
                " AS deleted FROM files f JOIN file_versions v ON v.tenant = f.tenant"
                " AND v.agent = f.agent AND v.path = f.path AND v.version = f.version"
                " WHERE f.tenant = %s AND f.agent = %s AND starts_with(f.path, %s)"
                " AND (%s OR f.deleted_at IS NULL) ORDER BY f.path LIMIT %s",
                (tenant, agent, prefix, include_deleted, limit),
            )
            rows = await cursor.fetchall()
        return [FileInfo.model_validate(row) for row in rows]
