"""The kernel's managers, opened together for a kernel worker or the operator's CLI."""

from __future__ import annotations

from temporalio.client import Client

from kernos.kernel.access import AccessManager
from kernos.kernel.approvals import ApprovalStore
from kernos.kernel.audit import AuditLog
from kernos.kernel.config import Settings
from kernos.kernel.db.pool import Pool, open_pool
from kernos.kernel.identity import IdentityResolver
from kernos.kernel.policy_store import PolicyStore, open_access
from kernos.kernel.run_store import RunStore
from kernos.kernel.sessions import SessionStore


class Kernel:
    """Access manager, audit log, approvals, run records and identity, on one pool."""

    def __init__(
        self, settings: Settings, pool: Pool, client: Client, access: AccessManager
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.client = client
        self.access = access
        self.runs = RunStore(pool)
        self.audit = AuditLog(pool)
        self.approvals = ApprovalStore(pool)
        self.sessions = SessionStore(pool)
        self.identity = IdentityResolver(self.runs, self._first_run_of)
        #: Set when the rules live in PostgreSQL: the kernel worker watches it for changes.
        self.policy_store: PolicyStore | None = None

    @classmethod
    async def open(cls, settings: Settings, client: Client) -> Kernel:
        """Load policies (failing fast on a malformed file), then open the database pool."""
        access, store = await open_access(settings)
        try:
            pool = await open_pool(settings.database)
        except BaseException:
            if store is not None:
                await store.aclose()
            raise
        kernel = cls(settings, pool, client, access)
        kernel.policy_store = store
        return kernel

    async def _first_run_of(self, workflow_id: str, execution_run_id: str) -> str:
        handle = self.client.get_workflow_handle(workflow_id, run_id=execution_run_id)
        description = await handle.describe()
        first = description.raw_description.workflow_execution_info.first_run_id
        return first or execution_run_id

    async def close(self) -> None:
        """Close the pool (and the policy store's engine)."""
        if self.policy_store is not None:
            await self.policy_store.aclose()
        await self.pool.close()
