"""Sessions: the instance that last served each user's series of runs, for cache affinity.

A session (`RunSpec.session`, the gateway's `X-Kernos-Session`) groups one user's runs of one
agent, the turns of a chat whose every request carries the whole conversation. The instance
that served the session's last call still holds that prefix in its cache, so the session's next
run sends its first call there (`RunInput.instances`), as a run's later calls go to the
instance that served its earlier ones. The record is a hint: the instance serves a call on its
own queue only for a run or session it served lately (`kernel/claims.py`), else the call goes
to the model's pool.
"""

from __future__ import annotations

from kernos.kernel.db.pool import Pool


class SessionStore:
    """Reads and writes `session_instances`."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def instances(self, tenant: str, user: str, agent: str, session: str) -> dict[str, str]:
        """The instance that served the session last, by model."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT model, instance FROM session_instances"
                " WHERE tenant = %s AND user_name = %s AND agent = %s AND session = %s",
                (tenant, user, agent, session),
            )
            return {row["model"]: row["instance"] for row in await cursor.fetchall()}

    async def served(
        self, tenant: str, user: str, agent: str, session: str, model: str, instance: str
    ) -> None:
        """`instance` has just served a call of the session on `model`."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO session_instances"
                " (tenant, user_name, agent, session, model, instance)"
                " VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (tenant, user_name, agent, session, model)"
                " DO UPDATE SET instance = EXCLUDED.instance, served_at = now()",
                (tenant, user, agent, session, model, instance),
            )
