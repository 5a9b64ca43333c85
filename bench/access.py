"""What access control costs: Casbin decisions per second, and the audit's latency per syscall.

1. `AccessManager.decide` on a policy of 1,000 rules (50 tenants, roles, deny rules and
   approval rules), against the packaged default policy, side by side: decisions per second
   on one core (the approval check included: it is a second enforcement when a request is
   allowed), on fresh requests and on the same requests again (remembered until the rules
   change).
2. The check of what a workflow claims about a syscall (`kernel.claims.false_claim`: queue,
   model, priority and fairness, timeouts, retries against the syscall table and the run's
   record), on an honest `llm.chat` of a `fair` run: microseconds per syscall, in-process;
   and the signature of its result (`kernel.result_seal`): made on the kernel worker, checked
   on the agent worker.
3. The kernel's database work per syscall: the decision's audit row (one statement: the run's
   liveness, the tenant's budget, the hash chain's append) and the result row, on an embedded
   PostgreSQL of its own: p50 and p99, one at a time; then 8 at once spread over 8 tenants
   (8 chains) against 8 at once in one tenant (one chain, whose appends take turns).

    python bench/access.py [--decisions 5000] [--syscalls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_results import percentile, run_benchmark, write_results

from kernos.infra.postgres import EmbeddedPostgres
from kernos.kernel.access import AccessManager, Decision, Subject
from kernos.kernel.audit import AttemptKey, AuditLog
from kernos.kernel.claims import Claims, Served, false_claim
from kernos.kernel.config import DatabaseSettings, Settings
from kernos.kernel.db import upgrade
from kernos.kernel.db.pool import Pool, open_pool
from kernos.kernel.result_seal import (
    new_signing_key,
    result_message,
    sign,
    signing_key,
    verified,
)
from kernos.kernel.run_store import RunRecord, RunStore
from kernos.kernel.syscall_table import LLM_CHAT
from kernos.kernel.syscalls import (
    LLMRequest,
    LLMResponse,
    Message,
    RunInput,
    RunSpec,
    Scheduling,
    SyscallLimits,
    TokenUsage,
)

TENANTS = [f"t{n}" for n in range(50)]
RESOURCES = [f"tool:t{n}" for n in range(10)] + [f"llm:m{n}" for n in range(5)] + ["memory:own"]


def big_policy(path: Path, rules: int = 1000) -> None:
    """`rules` rules: per-tenant roles with allows, some denies and approval rules."""
    rng = random.Random(7)
    lines: list[str] = []
    n = -1
    while len(lines) < rules:
        n += 1
        tenant = TENANTS[n % len(TENANTS)]
        kind = n % 10
        if kind < 6:
            resource = rng.choice(RESOURCES)
            act = "tool.call" if resource.startswith("tool") else resource.split(":")[0] + ".*"
            line = f"p, role:r{n % 7}, *, {tenant}, {resource}, {act}, allow"
        elif kind < 8:
            line = f"g, u{n % 40}, role:r{n % 7}, {tenant}"
        elif kind == 8:
            line = f"p, u{n % 40}, *, {tenant}, {rng.choice(RESOURCES)}, *, deny"
        else:
            line = f"a, *, agent{n % 3}, {tenant}, tool:t{n % 10}, tool.call"
        if line not in lines:
            lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def decisions_per_s(access: AccessManager, count: int) -> tuple[float, float]:
    """Decisions per second on `count` random requests, then on the same ones again (each
    then decided from memory)."""
    rng = random.Random(1)
    requests = []
    for _ in range(count):
        resource = rng.choice(RESOURCES)
        act = "tool.call" if resource.startswith("tool") else resource.split(":")[0] + ".chat"
        subject = Subject("r", rng.choice(TENANTS), f"u{rng.randrange(40)}", "agent")
        requests.append((subject, act, resource))
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        for subject, act, resource in requests:
            access.decide(subject, act, resource)
        rates.append(count / (time.perf_counter() - started))
    return rates[0], rates[1]


def claims_check_us(count: int) -> float:
    """Microseconds per check of an honest `llm.chat`'s claims (all of them hold)."""
    spec = RunSpec(agent="a", task="x", tenant="t1", model="m", priority=2)
    scheduling = Scheduling(policy="fair", fairness_weight=2.5)
    limits = SyscallLimits()
    record = RunRecord(
        run_id="r", first_execution_run_id="e", tenant="t1", user="u", agent="a", priority=2,
        model="m", spec=spec, scheduling=scheduling, limits=limits, status="running",
        created_at=datetime.now(UTC), finished_at=None, output=None, error=None,
        input_tokens=0, output_tokens=0,
    )  # fmt: skip
    served = Served("llm", frozenset({"llm.m", "llm.m@i1"}), model="m")
    claims = Claims.honest(LLM_CHAT, record, "llm.m")
    request = LLMRequest(model="m", messages=[Message(role="user", content="hi")])
    assert false_claim(LLM_CHAT, claims, request, record, served) is None
    started = time.perf_counter()
    for _ in range(count):
        false_claim(LLM_CHAT, claims, request, record, served)
    return (time.perf_counter() - started) / count * 1e6


def result_seal_us(count: int) -> tuple[float, float]:
    """Microseconds to sign an `llm.chat` result on the kernel worker and to check it on the
    agent worker: a request of 20 messages of 200 characters and an answer of 500, both dumped
    to JSON and hashed, then signed or verified with Ed25519.
    """
    key = signing_key(new_signing_key())
    public = key.public_key()
    run = ("run-1", "execution-1")
    request = LLMRequest(
        model="m", messages=[Message(role="user", content="x" * 200) for _ in range(20)]
    )
    response = LLMResponse(text="y" * 500, model="m", usage=TokenUsage(input_tokens=900))
    started = time.perf_counter()
    for _ in range(count):
        signed = sign(key, result_message(run, LLM_CHAT.name, request, response))
        sealed = response.model_copy(update={"seal": signed})
    signing = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    for _ in range(count):
        message = result_message(run, LLM_CHAT.name, request, sealed)
        assert verified(public, message, sealed.seal)
        sealed.model_copy(update={"seal": None})
    return signing, (time.perf_counter() - started) / count * 1e6


async def timed(count: int, concurrency: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Milliseconds per call, `concurrency` at once."""
    queue = list(range(count))
    times: list[float] = []

    async def worker() -> None:
        while queue:
            n = queue.pop()
            started = time.perf_counter()
            await call(n)
            times.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times


def p(values: list[float], q: float) -> float:
    return round(percentile(values, q), 2)


async def audit_costs(pool: Pool, count: int) -> dict[str, Any]:
    runs = RunStore(pool)
    subjects = []
    for tenant in TENANTS[:8]:
        run_id = f"bench-{tenant}"
        spec = RunSpec(agent="a", task="x", tenant=tenant, model="m")
        await runs.admit(RunInput(run_id=run_id, spec=spec))
        subjects.append(Subject(run_id, tenant, "operator", "a"))
    audit = AuditLog(pool)
    allow = Decision(True, "*, *, *, llm:*, llm.*, allow")
    counter = iter(range(10**9))

    async def syscall(subject: Subject) -> None:
        key = AttemptKey(subject.run_id, "exec", f"a{next(counter)}", 1)
        await audit.record_decision(key, subject, "llm.chat", "llm:m", allow, metered=True)
        await audit.record_result(
            key, "llm.chat", error_type=None, usage=TokenUsage(), duration_ms=1.0
        )

    async def decision_only(subject: Subject) -> None:
        key = AttemptKey(subject.run_id, "exec", f"d{next(counter)}", 1)
        await audit.record_decision(key, subject, "llm.chat", "llm:m", allow, metered=True)

    await timed(200, 1, lambda n: syscall(subjects[0]))  # warm up
    decision = await timed(count, 1, lambda n: decision_only(subjects[n % 8]))
    sequential = await timed(count, 1, lambda n: syscall(subjects[n % 8]))
    started = time.perf_counter()
    await timed(count, 8, lambda n: syscall(subjects[n % 8]))
    spread = count / (time.perf_counter() - started)
    started = time.perf_counter()
    one_chain = await timed(count, 8, lambda n: syscall(subjects[0]))
    one = count / (time.perf_counter() - started)
    return {
        "decision_row_p50_ms": p(decision, 0.5),
        "decision_row_p99_ms": p(decision, 0.99),
        "per_syscall_p50_ms": p(sequential, 0.5),
        "per_syscall_p99_ms": p(sequential, 0.99),
        "syscalls_per_s_8_at_once_8_tenants": round(spread, 1),
        "syscalls_per_s_8_at_once_1_tenant": round(one, 1),
        "one_tenant_p99_ms": p(one_chain, 0.99),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=5_000)
    parser.add_argument("--syscalls", type=int, default=2_000)
    args = parser.parse_args()

    policy = Settings().policy
    default = AccessManager(policy.resolved_model_path(), policy.resolved_policy_path())
    path = Path(tempfile.mkdtemp()) / "policy.csv"
    big_policy(path)
    large = AccessManager(policy.resolved_model_path(), path)
    default_cold, default_warm = decisions_per_s(default, args.decisions)
    large_cold, large_warm = decisions_per_s(large, args.decisions)
    result: dict[str, Any] = {
        "rules_default_policy": len(default.rules()),
        "decisions_per_s_default_policy": round(default_cold),
        "decisions_per_s_default_policy_remembered": round(default_warm),
        "rules_large_policy": len(large.rules()),
        "decisions_per_s_1000_rules": round(large_cold),
        "decisions_per_s_1000_rules_remembered": round(large_warm),
        "claims_check_us": round(claims_check_us(args.decisions * 4), 1),
    }
    sealing, checking = result_seal_us(args.decisions)
    result["result_seal_us"] = round(sealing, 1)
    result["result_check_us"] = round(checking, 1)
    postgres = EmbeddedPostgres.start(Path(tempfile.mkdtemp()) / "data")
    try:
        await upgrade(postgres.dsn(role="owner"))
        pool = await open_pool(DatabaseSettings(dsn=postgres.dsn(), pool_max=16))
        result |= await audit_costs(pool, args.syscalls)
        await pool.close()
    finally:
        postgres.stop(delete=True)
    print(f"{'figure':<40}{'value':>12}")
    for key, value in result.items():
        print(f"{key:<40}{value!s:>12}")
    write_results("access", result)


if __name__ == "__main__":
    run_benchmark(main)
