"""Durable human approval: requests that policy marks, and the decisions the kernel records.

A syscall that an `a` rule marks is let through only with an approved row for exactly its
request (same run, same input), which it consumes: one approval, one syscall. Until a human
decides, the syscall is refused with ApprovalRequired and the run waits; past `expires_at` the
request is denied. The workflow is only woken by `kernos approve`: the decision is here, so agent
code that skips the wait, or wakes itself, gains nothing.

A decision is made only by the owner's `approval_decide`, with proof of the approver that the
kernel's workers do not hold (an API key, or the operator's role), and appended to the chain
with it; an approved row without that chain entry lets nothing through.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from kernos.kernel.access import Subject
from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import AccessDenied, InvalidRequest, NotFound
from kernos.kernel.syscall_table import APPROVAL_DECIDE

Status = Literal["pending", "approved", "denied", "expired"]


class Approval(BaseModel):
    """One request for approval and, once decided, its decision."""

    id: str
    run_id: str
    tenant: str
    user_name: str
    agent: str
    syscall: str
    resource: str
    request: dict[str, Any]
    rule: str
    status: Status
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    used_by: str | None


@dataclass(frozen=True)
class Gate:
    """What the approvals say about one syscall attempt."""

    state: Literal["approved", "denied", "pending", "forged"]
    """`forged`: marked approved with no decision for it in the chain (changed by hand), or
    showing the human another request than the one asking."""
    approval: Approval
    shows_another: bool = False

    def explain(self) -> str:
        """Why it passes or not, for the audit row and the error."""
        a = self.approval
        what = f"{a.syscall} on {a.resource}"
        if self.state == "approved":
            return f"approved by {a.decided_by!r} (approval {a.id}): {a.reason or 'no reason'}"
        if self.state == "pending":
            return (
                f"{what} needs a human's approval (rule: {a.rule}); waiting for approval {a.id} "
                f"until {a.expires_at:%Y-%m-%d %H:%M:%S %Z}: kernos approve {a.run_id}"
            )
        if self.state == "forged" and self.shows_another:
            return (
                f"{what}: approval {a.id} shows another request than this one under its "
                "digest: an approval written outside the kernel lets nothing through"
            )
        if self.state == "forged":
            return (
                f"{what}: approval {a.id} is marked approved by {a.decided_by!r}, but tenant "
                f"{a.tenant!r}'s chain holds no such decision: an approval written outside the "
                "kernel's decision function lets nothing through"
            )
        if a.status == "expired":
            return (
                f"{what}: approval {a.id} expired undecided at {a.expires_at:%Y-%m-%d %H:%M:%S %Z}"
            )
        return f"{what} denied by {a.decided_by!r} (approval {a.id}): {a.reason or 'no reason'}"


_COLUMNS = (
    "id::text AS id, run_id, tenant, user_name, agent, syscall, resource, request, rule, status,"
    " requested_at, expires_at, decided_by, decided_at, reason, used_by"
)


class ApprovalStore:
    """Reads and writes `approvals`."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def gate(
        self,
        *,
        key: str,
        subject: Subject,
        syscall: str,
        resource: str,
        request: dict[str, Any],
        rule: str,
        timeout_s: float,
    ) -> Gate:
        """Let the attempt `key` through on an approval of its request, or say why not.

        The first time a request is seen it becomes a pending approval. An approval is used
        once; a retried attempt of the activity that used it (same `key`) passes again.
        """
        digest = hashlib.sha256(
            f"{syscall}\x1f{resource}\x1f{_canonical(request)}".encode()
        ).digest()
        where = {"run": subject.run_id, "digest": digest, "key": key}
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%(run)s || %(digest)s::text, 0))",
                where,
            )
            cursor = await conn.execute(
                f"SELECT {_COLUMNS}, expires_at < now() AS expired FROM approvals"
                " WHERE run_id = %(run)s AND input_sha256 = %(digest)s"
                " AND (used_by IS NULL OR used_by = %(key)s)"
                " ORDER BY (used_by = %(key)s) DESC NULLS LAST, requested_at DESC LIMIT 1",
                where,
            )
            row = await cursor.fetchone()
            if row is None:
                # The run's tenant, user and agent come from its record, in the owner's function.
                try:
                    cursor = await conn.execute(
                        f"SELECT {_COLUMNS} FROM approval_request(%s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            str(uuid.uuid4()), subject.run_id, syscall, resource, Jsonb(request),
                            digest, rule, timeout_s,
                        ),
                    )  # fmt: skip
                except psycopg.errors.ProgramLimitExceeded as exc:
                    raise AccessDenied(exc.diag.message_primary or str(exc)) from None
                except psycopg.DataError as exc:
                    # Refused for good, not retried: the same request would fail the same way.
                    raise InvalidRequest(
                        f"{syscall} on {resource}: the request cannot be kept for a human's "
                        f"approval ({exc.diag.message_primary or exc})"
                    ) from None
                created = await cursor.fetchone()
                return Gate("pending", Approval.model_validate(created))
            if (row["syscall"], row["resource"], row["request"]) != (syscall, resource, request):
                # The request a human sees must be the one that goes through: this row shows
                # another under this one's digest (the kernel's role wrote it so).
                return Gate("forged", Approval.model_validate(row), shows_another=True)
            status = row["status"]
            if status == "pending" and not row["expired"]:
                return Gate("pending", Approval.model_validate(row))
            if status == "approved" and not await _decided_in_chain(conn, row):
                return Gate("forged", Approval.model_validate(row))
            # A decision (or an expiry) is used by the attempt it reaches: the next identical
            # request asks anew.
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM approval_use(%s, %s)", (row["id"], key)
            )
            used = Approval.model_validate(await cursor.fetchone())
        return Gate("approved" if used.status == "approved" else "denied", used)

    async def decide(
        self,
        approval_id: str,
        *,
        approver: str,
        approve: bool,
        reason: str | None,
        rule: str | None,
        api_key: str | None = None,
    ) -> Approval:
        """Record a human's decision on a pending request (who may decide is checked first).

        The owner's function records it and appends it to the tenant's chain together, with the
        rule that let `approver` decide. It asks for proof of the approver: `api_key` (whose
        user `approver` must be), or else this store's pool must be the operator's role.
        """
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    f"SELECT {_COLUMNS} FROM approval_decide(%s, %s, %s, %s, %s, %s)",
                    (_id(approval_id), approve, reason, rule, approver, api_key),
                )
                row = await cursor.fetchone()
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidPassword) as exc:
            # No proof of the approver (or not this approver's): the function says which.
            raise AccessDenied(exc.diag.message_primary or str(exc)) from None
        if row is None or row["id"] is None:
            current = await self.get(approval_id)
            state = "expired" if current.status == "pending" else current.status
            raise InvalidRequest(
                f"approval {approval_id} is {state}; only a pending one is decided"
            )
        return Approval.model_validate(row)

    async def get(self, approval_id: str) -> Approval:
        """One approval by id."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE id = %s", (_id(approval_id),)
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"no approval {approval_id!r}")
        return Approval.model_validate(row)

    async def listing(
        self, *, run_id: str | None = None, tenant: str | None = None, pending_only: bool = True
    ) -> list[Approval]:
        """Approvals, oldest first: pending ones by default."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE"
                " (%(run)s::text IS NULL OR run_id = %(run)s)"
                " AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
                " AND (NOT %(pending)s OR (status = 'pending' AND expires_at >= now()))"
                " ORDER BY requested_at",
                {"run": run_id, "tenant": tenant, "pending": pending_only},
            )
            rows = await cursor.fetchall()
        return [Approval.model_validate(row) for row in rows]


async def _decided_in_chain(conn: AsyncConnection[DictRow], approval: dict[str, Any]) -> bool:
    """Whether the chain holds the approving decision `approval_decide` appends with it.

    Only the owner's decision function can append it (the kernel's role appends no allowed
    decision), keyed by the approval and its outcome, so a row set to approved by any other
    means finds none.
    """
    cursor = await conn.execute(
        "SELECT 1 FROM audit WHERE workflow_id = %s AND execution_run_id = 'operator'"
        " AND activity_id = %s AND attempt = 1 AND decision = 'allow' AND syscall = %s",
        (
            approval["run_id"],
            f"{APPROVAL_DECIDE.name}/{approval['id']}/approved",
            APPROVAL_DECIDE.name,
        ),
    )
    return await cursor.fetchone() is not None


def _canonical(request: dict[str, Any]) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"))


def _id(approval_id: str) -> str:
    try:
        return str(uuid.UUID(approval_id))
    except ValueError:
        raise InvalidRequest(f"{approval_id!r} is not an approval id (a UUID)") from None
