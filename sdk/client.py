"""`KernosClient`: admission of runs, on the kernel host with the operator's credentials."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from kernos.approval_decisions import Decided, decide
from kernos.kernel import visibility
from kernos.kernel.access import Decision, Subject
from kernos.kernel.admission import admitted_spec
from kernos.kernel.api_keys import OPERATOR, ApiKey, ApiKeyStore, Principal
from kernos.kernel.approvals import Approval, ApprovalStore
from kernos.kernel.audit import AuditLog
from kernos.kernel.config import ProcessKind, Settings, load_settings
from kernos.kernel.db.pool import Pool, dsn, open_pool
from kernos.kernel.errors import (
    AccessDenied,
    InvalidRequest,
    InvalidRunSpec,
    KernosError,
    PayloadTooLarge,
    RunNotFound,
    UnknownAgent,
    UnknownModel,
    first_problem,
)
from kernos.kernel.run_ends import ended_as, record_and_audit_end
from kernos.kernel.run_events import EventFeed, RunEvent, RunEventLog
from kernos.kernel.run_store import RunRecord, RunStore
from kernos.kernel.sessions import SessionStore
from kernos.kernel.syscall_table import AGENT_RUN, RUN_SUBMIT
from kernos.kernel.syscalls import (
    RunInput,
    RunOutcome,
    RunResult,
    RunSpec,
    Scheduling,
    check_name,
)

log = logging.getLogger(__name__)

#: How a server at its limit of long polls turns a run's wait away: the wait polls again.
_POLL_AGAIN = frozenset({RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.CANCELLED})


class RunFailed(KernosError):
    """A run ended in failure; `error_type` names the agent's or kernel's error."""

    def __init__(self, run_id: str, error_type: str, message: str) -> None:
        self.run_id = run_id
        self.error_type = error_type
        self.message = message
        super().__init__(f"run {run_id} failed: {error_type}: {message}")


class SyscallView(BaseModel):
    """One syscall attempt of a run, as `kernos show` lists it."""

    at: str
    syscall: str
    resource: str
    attempt: int
    decision: str
    basis: str
    """What the decision rested on: `policy`, or the kernel's own checks (`identity`,
    `finished`, `budget`, `claim`: what the workflow claimed is not what the kernel recorded),
    or a human's `approval`."""
    rule: str | None
    reason: str | None
    outcome: str | None
    error_type: str | None
    input_tokens: int | None
    output_tokens: int | None
    duration_ms: float | None


class RunView(BaseModel):
    """A run as the operator sees it: the kernel's record and Temporal's live state."""

    record: RunRecord
    temporal_status: str | None
    waiting_on: str | None
    """What a running run is waiting for, e.g. a syscall being retried."""
    syscalls: list[SyscallView] = []

    @property
    def status(self) -> str:
        """The kernel's status, refined by Temporal's for runs still going."""
        if self.record.finished or self.temporal_status is None:
            return self.record.status
        if self.temporal_status != "RUNNING":
            return self.temporal_status.lower()
        return "waiting" if self.waiting_on else "running"


class TenantUsage(BaseModel):
    """Tokens a tenant's runs have used, and its budget if it has one."""

    tenant: str
    input_tokens: int
    output_tokens: int
    syscalls: int
    max_tokens: int | None

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class RunHandle:
    """A submitted run."""

    def __init__(self, client: KernosClient, run_id: str, execution_id: str | None = None) -> None:
        self._client = client
        self.run_id = run_id
        #: Temporal's run id of the run's first execution, where known.
        self.execution_id = execution_id

    def ui_url(self) -> str:
        """The run in the Temporal UI."""
        return ui_url(self._client.settings, self.run_id, self.execution_id)

    @property
    def _workflow(self) -> WorkflowHandle[Any, RunResult]:
        return self._client.temporal.get_workflow_handle(self.run_id, result_type=RunResult)

    async def result(self) -> RunResult:
        """Wait for the run to finish; RunFailed if it failed.

        The run's record says how it ended by the time this returns: it is recorded from
        what Temporal answers, unless a kernel worker (`RunEnds`) was first. The wait is a long
        poll; a server at its limit of concurrent long polls (thousands of
        waiting clients) answers RESOURCE_EXHAUSTED, or cancels a poll it had taken, and the
        wait backs off and polls again.
        """
        delay = 0.2
        while True:
            try:
                return await self._wait()
            except RPCError as exc:
                if exc.status not in _POLL_AGAIN:
                    raise
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _wait(self) -> RunResult:
        try:
            result = await self._workflow.result()
        except WorkflowFailureError as exc:
            await self._client._record_end(self.run_id, ended_as(exc))
            cause = exc.cause
            error_type = getattr(cause, "type", None) or type(cause).__name__
            message = getattr(cause, "message", None) or str(cause)
            raise RunFailed(self.run_id, error_type, message) from exc
        await self._client._record_end(
            self.run_id, RunOutcome(status="completed", output=result.output)
        )
        return result

    async def closed(self) -> bool:
        """Whether Temporal has closed the run (its record may not say so yet)."""
        description = await self._workflow.describe()
        return description.status not in (None, WorkflowExecutionStatus.RUNNING)

    async def cancel(self, *, terminate_after_s: float | None = None) -> bool:
        """Ask the run to stop; an in-flight generation is aborted on its server.

        Agent code may ignore the request: with `terminate_after_s`, a run still going after
        that long is terminated. True if it was.
        """
        await self._workflow.cancel()
        if terminate_after_s is None:
            return False
        return await self.terminate_unless_stopped(terminate_after_s)

    async def terminate_unless_stopped(self, after_s: float) -> bool:
        """Terminate the run if it is still going `after_s` from now; True if it was."""
        deadline = asyncio.get_running_loop().time() + after_s
        while asyncio.get_running_loop().time() < deadline:
            if await self.closed():
                return False
            await asyncio.sleep(0.2)
        try:
            await self._workflow.terminate(
                reason=f"it did not stop within {after_s:g} s of being cancelled"
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return False  # it closed in the meantime
        return True


class KernosClient:
    """Submits, lists and inspects runs; the kernel writes each run's record, then starts it."""

    def __init__(
        self,
        settings: Settings,
        temporal: Client,
        pool: Pool,
        principal: Principal | None = None,
        api_key: str | None = None,
        feed: EventFeed | None = None,
    ) -> None:
        self.settings = settings
        self.temporal = temporal
        self.pool = pool
        self.runs = RunStore(pool)
        self.principal = principal
        """Who this client is, from its API key; None for the operator on the kernel host."""
        #: The key itself: the proof the database asks of an approver (it keeps only a hash).
        self._api_key = api_key
        self._operator_pool: Pool | None = None
        #: What wakes this client's followers of runs' events; a client's own unless shared.
        self._feed = feed
        self._owns_feed = feed is None

    @classmethod
    async def connect(
        cls,
        settings: Settings | None = None,
        *,
        api_key: str | None = None,
        traced: bool = True,
        process: ProcessKind = "client",
    ) -> KernosClient:
        """Connect to Temporal and to the kernel's database.

        With an `api_key`, the client acts as the key's user in the key's tenant: its runs are
        theirs, and a run for another tenant needs a rule allowing `run.submit` on
        `tenant:<other>`. A bad or revoked key fails here. `process`: whose Temporal credentials
        it connects with (`[temporal.<kind>]`); the gateway has its own.
        """
        settings = settings or load_settings()
        temporal = await connect_temporal(settings, process, traced=traced)
        pool = await open_pool(settings.database)
        principal = None
        if api_key is not None:
            try:
                principal = await ApiKeyStore(pool).authenticate(api_key)
            except BaseException:
                await pool.close()
                raise
        return cls(settings, temporal, pool, principal, api_key)

    async def close(self) -> None:
        """Release the database pools."""
        if self._feed is not None and self._owns_feed:
            await self._feed.close()
        await self.pool.close()
        if self._operator_pool is not None:
            await self._operator_pool.close()

    def event_feed(self) -> EventFeed:
        """What wakes this client's followers of runs' events (one listening connection)."""
        if self._feed is None:
            self._feed = EventFeed(dsn(self.settings.database))
        return self._feed

    async def operator_pool(self, what: str) -> Pool:
        """The operator's connections, for `what` (a decision over the record).

        Opened on first use with `[database] operator_dsn`; never for a client with an API key,
        which acts as its key's user and not as the operator.
        """
        if self.principal is not None:
            raise AccessDenied(
                f"{what} is the operator's: API key {self.principal.key_id} is "
                f"{self.principal.qualified!r}'s"
            )
        if self._operator_pool is None:
            self._operator_pool = await open_pool(self.settings.database, operator=True)
        return self._operator_pool

    async def _record_end(self, run_id: str, outcome: RunOutcome) -> None:
        """Record how Temporal says `run_id` ended, unless its record says so already.

        The result is Temporal's to give: a database this client cannot reach (or a client
        closed under its handle) leaves the record to kernel workers, who learn every end.
        """
        try:
            # Shielded: a caller that stops waiting (a gateway's wait_s) must not cut it short.
            await asyncio.shield(record_and_audit_end(self.pool, run_id, outcome))
        except psycopg.Error as exc:
            log.warning("run %s ended; its record is left to kernel workers: %s", run_id, exc)

    @property
    def api_key(self) -> str | None:
        """The API key this client presents, if any (its proof as an approver)."""
        return self._api_key

    async def __aenter__(self) -> KernosClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def validate(self, spec: RunSpec | dict[str, Any]) -> RunSpec:
        """Check a spec against this kernel's agents, models and limits; fill in the model."""
        return check_spec(self.settings, spec)

    async def submit(self, spec: RunSpec | dict[str, Any]) -> RunHandle:
        """Admit a run: validate, record it, start its workflow; nothing is left on failure."""
        run_id = f"run-{uuid.uuid4().hex[:20]}"
        checked = await admitted_spec(
            self.settings, self.pool, self.principal, self.validate(spec), run_id
        )
        scheduling = self.settings.scheduler.scheduling(checked.policy, checked.tenant)
        run = RunInput(
            run_id=run_id,
            spec=checked,
            limits=self.settings.limits,
            kernel_task_queue=self.settings.temporal.kernel_task_queue,
            llm_queue_prefix=self.settings.temporal.llm_queue_prefix,
            tool_queue_prefix=self.settings.tools.queue_prefix,
            tools=sorted(self.settings.tools.registry),
            mcp_servers=sorted(self.settings.tools.mcp),
            scheduling=scheduling,
            pool=self.settings.isolation.pool_of(checked.tenant, checked.agent),
            instances=await self._session_instances(checked, scheduling),
            reports_end=False,
        )
        await self.runs.admit(
            run,
            api_key_id=self.principal.key_id if self.principal else None,
            key_running=self.settings.gateway.key_running_runs,
        )
        try:
            handle = await self.temporal.start_workflow(
                AGENT_RUN,
                run,
                id=run_id,
                task_queue=self.settings.temporal.agent_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(visibility.AGENT, checked.agent),
                        SearchAttributePair(visibility.TENANT, checked.tenant),
                        SearchAttributePair(visibility.STATUS, "running"),
                    ]
                ),
                static_summary=f"{checked.agent} for {checked.tenant}/{checked.user}",
            )
        except BaseException:
            await self.runs.forget(run_id)
            raise
        assert handle.first_execution_run_id is not None
        await self.runs.bind(run_id, handle.first_execution_run_id)
        return RunHandle(self, run_id, handle.first_execution_run_id)

    async def _session_instances(self, spec: RunSpec, scheduling: Scheduling) -> dict[str, str]:
        """Where the run's first calls wait: the instances that served its session last."""
        if spec.session is None or not scheduling.affinity_s:
            return {}
        return await SessionStore(self.pool).instances(
            spec.tenant, spec.user, spec.agent, spec.session
        )

    async def stream(self, run_id: str, *, after: int = 0) -> AsyncIterator[RunEvent]:
        """The run's events after the `after`-th, as they happen, until it finishes.

        Syscalls with their decisions and results, a generation's text as it grows, approvals,
        memory and file writes, the end (`kernos.kernel.run_events`). With an API key, only
        the key's user's runs: another's is RunNotFound, as one that does not exist.
        """
        record = await self.runs.get(run_id)
        if not await self.owns(record):
            raise RunNotFound(run_id)
        async for event in RunEventLog(self.pool).follow(run_id, self.event_feed(), after):
            yield event

    async def owns(self, record: RunRecord) -> bool:
        """Whether this client may see the run.

        The operator sees any; an API key its user's runs in its tenant, or in a tenant the
        user may submit to.
        """
        principal = self.principal
        if principal is None:
            return True
        if record.user != principal.user_in(record.tenant):
            return False
        if record.tenant == principal.tenant:
            return True
        from kernos.kernel.policy_store import load_access

        access = await load_access(self.settings)
        subject = Subject("", record.tenant, record.user, record.agent)
        return access.decide(subject, RUN_SUBMIT.name, f"tenant:{record.tenant}").allowed

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run."""
        return RunHandle(self, run_id)

    async def list_runs(self, *, limit: int = 50, tenant: str | None = None) -> list[RunView]:
        """The newest runs, with live state for those still going."""
        records = await self.runs.recent(limit=limit, tenant=tenant)
        return list(await asyncio.gather(*(self._view(record) for record in records)))

    async def show(self, run_id: str) -> RunView:
        """One run with every syscall attempt, its decision and its tokens."""
        view = await self._view(await self.runs.get(run_id))
        view.syscalls = await self._syscalls(run_id)
        return view

    async def usage(self, tenant: str | None = None) -> list[TenantUsage]:
        """Tokens per tenant (every tenant with usage or a budget, or just `tenant`)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT coalesce(u.tenant, b.tenant) AS tenant,"
                " coalesce(u.input_tokens, 0) AS input_tokens,"
                " coalesce(u.output_tokens, 0) AS output_tokens,"
                " coalesce(u.syscalls, 0) AS syscalls, b.max_tokens"
                " FROM tenant_usage u FULL JOIN tenant_budgets b ON b.tenant = u.tenant"
                " WHERE %(tenant)s::text IS NULL OR coalesce(u.tenant, b.tenant) = %(tenant)s"
                " ORDER BY 1",
                {"tenant": tenant},
            )
            rows = await cursor.fetchall()
        return [TenantUsage.model_validate(row) for row in rows]

    async def audit_operator(
        self, tenant: str, action: str, resource: str, what: str, agent: str = "*"
    ) -> None:
        """Append an operator's action (no run's) to the tenant's audit chain."""
        user = self.principal.user if self.principal else "operator"
        await AuditLog(self.pool).record_operator(
            Subject("", tenant, user, agent), action, resource, Decision(True, None, what)
        )

    async def set_budget(self, tenant: str, max_tokens: int | None) -> None:
        """Cap a tenant's tokens (input plus output), or lift the cap with None."""
        try:
            check_name("tenant", tenant)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        if max_tokens is not None and max_tokens < 1:
            raise InvalidRequest(f"a token budget must be at least 1, not {max_tokens}")
        pool = await self.operator_pool("setting a budget")
        async with pool.connection() as conn:
            # The owner's function changes the budget and appends it to the tenant's chain.
            await conn.execute("SELECT budget_set(%s, %s, %s)", (tenant, max_tokens, OPERATOR))

    async def create_key(
        self, *, user: str, tenant: str, label: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new API key for `user` in `tenant`, and its token (shown this once); audited."""
        try:
            check_name("user", user)
            check_name("tenant", tenant)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        pool = await self.operator_pool("making an API key")
        return await ApiKeyStore(pool).create(
            user=user, tenant=tenant, created_by=OPERATOR, label=label
        )

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke an API key (kept, for the record); audited once."""
        pool = await self.operator_pool("revoking an API key")
        return await ApiKeyStore(pool).revoke(key_id, revoked_by=OPERATOR)

    async def approvals(
        self, *, run_id: str | None = None, tenant: str | None = None, pending_only: bool = True
    ) -> list[Approval]:
        """Requests for a human's approval, oldest first (pending ones by default)."""
        return await ApprovalStore(self.pool).listing(
            run_id=run_id, tenant=tenant, pending_only=pending_only
        )

    async def approve(
        self,
        run_id: str,
        *,
        user: str,
        reason: str | None = None,
        approval_id: str | None = None,
        deny: bool = False,
    ) -> Decided:
        """Approve (or `deny`) a run's waiting request as `user`.

        Policy must allow `user` `approval.decide` on the request's resource; the kernel records
        the decision, then wakes the run.
        """
        return await decide(
            self, run_id, approver=user, approve=not deny, reason=reason, approval_id=approval_id
        )

    async def _view(self, record: RunRecord) -> RunView:
        if record.finished:
            return RunView(record=record, temporal_status=None, waiting_on=None)
        try:
            description = await self.temporal.get_workflow_handle(record.run_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return RunView(record=record, temporal_status="NOT_FOUND", waiting_on=None)
        status = description.status or WorkflowExecutionStatus.RUNNING
        if status != WorkflowExecutionStatus.RUNNING:
            # Temporal has the end and the kernel's record not yet: recorded now, as a client
            # waiting for the result records it, rather than shown closed without its output.
            with contextlib.suppress(RunFailed, RPCError):
                await self.handle(record.run_id).result()
            recorded = await self.runs.get(record.run_id)
            if recorded.finished:
                return RunView(record=recorded, temporal_status=None, waiting_on=None)
        waiting = None
        for pending in description.raw_description.pending_activities:
            if pending.attempt > 1:
                failure = pending.last_failure.message if pending.HasField("last_failure") else ""
                waiting = f"{pending.activity_type.name} retrying (attempt {pending.attempt})" + (
                    f": {failure}" if failure else ""
                )
        return RunView(record=record, temporal_status=status.name, waiting_on=waiting)

    async def _syscalls(self, run_id: str) -> list[SyscallView]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT a.at::text AS at, a.syscall, a.resource, a.attempt, a.decision, a.basis,"
                " a.rule, a.reason, r.outcome, r.error_type, r.input_tokens, r.output_tokens,"
                " r.duration_ms FROM audit a LEFT JOIN syscall_results r USING"
                " (workflow_id, execution_run_id, activity_id, attempt)"
                " WHERE a.run_id = %s ORDER BY a.id",
                (run_id,),
            )
            rows = await cursor.fetchall()
        return [SyscallView.model_validate(row) for row in rows]


def ui_url(settings: Settings, run_id: str, execution_id: str | None = None) -> str:
    """Where the Temporal UI shows a run (its first execution's history, when known)."""
    base = f"{settings.temporal.ui_url.rstrip('/')}/namespaces/{settings.temporal.namespace}"
    if execution_id is None:
        return f"{base}/workflows/{run_id}"
    return f"{base}/workflows/{run_id}/{execution_id}/history"


def check_spec(settings: Settings, spec: RunSpec | dict[str, Any]) -> RunSpec:
    """Validate a run's spec against `settings` (no I/O); return it with its model filled in."""
    try:
        parsed = RunSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidRunSpec(first_problem(exc)) from exc
    if parsed.agent not in settings.agents:
        raise UnknownAgent(parsed.agent, list(settings.agents))
    model = settings.model_for(parsed.model)
    if model not in settings.models():
        raise UnknownModel(model, settings.models())
    size = len(parsed.task.encode("utf-8"))
    if size > settings.max_task_bytes:
        raise PayloadTooLarge("the task", size, settings.max_task_bytes, "max_task_bytes")
    return parsed.model_copy(update={"model": model})


async def connect_temporal(
    settings: Settings,
    process: ProcessKind = "client",
    *,
    traced: bool = True,
    component: str | None = None,
) -> Client:
    """A Temporal client with `process`'s credentials and the pydantic data converter.

    The credentials are `[temporal.<kind>]`'s over `[temporal]`'s. Its certificate files are
    checked first: a bad one is a ConfigError naming its setting, and a refused connection one
    line saying what to mend; either way nothing has started. `traced`: its calls are spans
    (`[telemetry]`, as `component`, by default the kind); a command that only reads goes
    without (and without loading OpenTelemetry).
    """
    from kernos.kernel.temporal_credentials import connect_options, presented, refused

    credentials = presented(settings.temporal, process)
    options = connect_options(credentials)
    plugins = []
    if traced:
        from kernos.kernel import telemetry

        plugins = telemetry.configure(settings.telemetry, component or process.replace("_", "-"))
    try:
        return await Client.connect(
            settings.temporal.address,
            namespace=settings.temporal.namespace,
            data_converter=pydantic_data_converter,
            plugins=plugins,
            tls=options.tls,
            api_key=options.api_key,
        )
    except RuntimeError as exc:
        raise refused(
            exc, settings.temporal.address, credentials, settings.temporal.namespace
        ) from exc
