"""API keys: who a client is, as the kernel records it, never as the client says.

A key is `kn_<id>_<secret>`: the id finds the row, the secret is checked against its SHA-256
(the secret is 32 random bytes, so a fast hash is enough: there is nothing to guess). The key
is shown once, when created; a revoked key authenticates nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from pydantic import BaseModel

from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import AccessDenied, NotFound

_KEY = re.compile(r"^kn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Principal(BaseModel):
    """Who an API key says the client is."""

    key_id: str
    user: str
    tenant: str


class ApiKey(BaseModel):
    """A key as the operator sees it (never its secret)."""

    id: str
    user_name: str
    tenant: str
    label: str | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class AuthenticationFailed(AccessDenied):
    """An API key that is malformed, unknown or revoked (which one is not said)."""


class ApiKeyStore:
    """Reads and writes `api_keys`."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create(
        self, *, user: str, tenant: str, created_by: str, label: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key for `user` in `tenant`, and its token (shown this once)."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO api_keys (id, secret_sha256, user_name, tenant, label, created_by)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                (key_id, _digest(secret), user, tenant, label, created_by),
            )
            row = await cursor.fetchone()
        return ApiKey.model_validate(row), f"kn_{key_id}_{secret}"

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid, unrevoked key; AuthenticationFailed otherwise."""
        match = _KEY.match(token.strip())
        if match is None:
            raise AuthenticationFailed("the API key is not a kernos key (kn_<id>_<secret>)")
        key_id, secret = match.groups()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = %s AND revoked_at IS NULL"
                " RETURNING secret_sha256, user_name, tenant",
                (key_id,),
            )
            row = await cursor.fetchone()
        if row is None or not hmac.compare_digest(bytes(row["secret_sha256"]), _digest(secret)):
            raise AuthenticationFailed(f"API key {key_id} is unknown, revoked or wrong")
        return Principal(key_id=key_id, user=row["user_name"], tenant=row["tenant"])

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (kept, for the record)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s"
                " RETURNING *",
                (key_id,),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        return ApiKey.model_validate(row)

    async def listing(self, tenant: str | None = None) -> list[ApiKey]:
        """Keys, oldest first."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT * FROM api_keys WHERE %(t)s::text IS NULL OR tenant = %(t)s"
                " ORDER BY created_at",
                {"t": tenant},
            )
            rows = await cursor.fetchall()
        return [ApiKey.model_validate(row) for row in rows]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
