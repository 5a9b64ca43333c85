"""API keys: who a client is, as the kernel records it, never as the client says.

A key is `kn_<id>_<secret>`: the id finds the row, the secret is checked against its SHA-256
(the secret is 32 random bytes, so a fast hash is enough: there is nothing to guess). The key
is shown once, when created; a revoked key authenticates nobody. Keys are made and revoked only
on the operator's connections (the owner's functions append each to the key's tenant's chain);
the kernel's role reads them and notes their last use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from pydantic import BaseModel

from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import AccessDenied, InvalidRequest, NotFound

#: Who acts without a key, on the kernel's host.
OPERATOR = "operator"
_KEY = re.compile(r"^kn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def claimed_key_id(token: str) -> str | None:
    """The key id a token names if it is shaped as a key, unchecked: not proof of the key."""
    match = _KEY.match(token.strip())
    return match.group(1) if match is not None else None


class Principal(BaseModel):
    """Who an API key says the client is: a user of its home tenant."""

    key_id: str
    user: str
    tenant: str
    """The key's home tenant."""

    @property
    def qualified(self) -> str:
        """The user qualified by the home tenant, `tenant/user`."""
        return f"{self.tenant}/{self.user}"

    def user_in(self, tenant: str) -> str:
        """How the user is named in `tenant`: by name at home, `home/user` anywhere else.

        So a rule for tenant acme's `carol` is never one for tenant evil's `carol`.
        """
        return self.user if tenant == self.tenant else self.qualified


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
    """An API key that is missing, malformed, unknown, revoked or wrong (which one is not said)."""


FAILED_AUTHENTICATION = (
    "authentication failed: present a valid, unrevoked kernos API key (Authorization: Bearer "
    "kn_<id>_<secret>)"
)
"""The one answer to every failed authentication: a prober learns nothing from it."""
#: Compared against when the key id is unknown, so an unknown id costs what a wrong secret does.
_NO_SECRET = bytes(32)


class ApiKeyStore:
    """Reads and writes `api_keys`: `create` and `revoke` on a pool of the operator's role."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create(
        self, *, user: str, tenant: str, created_by: str, label: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key for `user` in `tenant`, and its token (shown this once).

        Not for `operator`: that is who acts on the kernel's host without a key (the default
        policy lets it decide every approval and edit every rule).
        """
        if user == OPERATOR:
            raise InvalidRequest(
                f"{OPERATOR!r} is the kernel host's operator, not a user an API key can be for"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT * FROM api_key_create(%s, %s, %s, %s, %s, %s)",
                (key_id, _digest(secret), user, tenant, label, created_by),
            )
            row = await cursor.fetchone()
        return ApiKey.model_validate(row), f"kn_{key_id}_{secret}"

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid, unrevoked key; AuthenticationFailed otherwise.

        Nothing is written until the secret is checked: a failed attempt leaves no trace in
        the table (not even `last_used_at`).
        """
        match = _KEY.match(token.strip())
        if match is None:
            raise AuthenticationFailed(FAILED_AUTHENTICATION)
        key_id, secret = match.groups()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT secret_sha256, user_name, tenant FROM api_keys"
                " WHERE id = %s AND revoked_at IS NULL",
                (key_id,),
            )
            row = await cursor.fetchone()
            stored = bytes(row["secret_sha256"]) if row is not None else _NO_SECRET
            if not hmac.compare_digest(stored, _digest(secret)) or row is None:
                raise AuthenticationFailed(FAILED_AUTHENTICATION)
            await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (key_id,))
        return Principal(key_id=key_id, user=row["user_name"], tenant=row["tenant"])

    async def revoke(self, key_id: str, *, revoked_by: str) -> ApiKey:
        """Revoke a key (kept, for the record)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT * FROM api_key_revoke(%s, %s)", (key_id, revoked_by)
            )
            row = await cursor.fetchone()
        if row is None or row["id"] is None:
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
