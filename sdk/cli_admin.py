"""`kernos instances`, `queues`, `usage` and `budget`: what the kernel's resources are doing."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
from typing import TYPE_CHECKING

from kernos.cli_output import print_json, with_client

if TYPE_CHECKING:
    from kernos.client import KernosClient
    from kernos.kernel.config import Settings


async def cmd_usage(settings: Settings, args: argparse.Namespace) -> int:
    """Tokens per tenant, with budgets."""

    async def body(client: KernosClient) -> int:
        rows = await client.usage(args.tenant)
        if args.json:
            print_json({"tenants": [row.model_dump() for row in rows]})
            return 0
        print(f"{'TENANT':<24}{'INPUT':>12}{'OUTPUT':>12}{'SYSCALLS':>10}{'BUDGET':>14}")
        for row in rows:
            budget = str(row.max_tokens) if row.max_tokens is not None else "-"
            print(
                f"{row.tenant:<24}{row.input_tokens:>12}{row.output_tokens:>12}"
                f"{row.syscalls:>10}{budget:>14}"
            )
        return 0

    return await with_client(settings, body)


async def cmd_budget(settings: Settings, args: argparse.Namespace) -> int:
    """Set or clear a tenant's token budget."""

    async def body(client: KernosClient) -> int:
        limit = None if args.budget_command == "clear" else args.tokens
        await client.set_budget(args.tenant, limit)
        print(
            f"tenant {args.tenant}: "
            + (f"budget of {limit} tokens" if limit is not None else "no budget")
        )
        return 0

    return await with_client(settings, body)


async def cmd_instances(settings: Settings, args: argparse.Namespace) -> int:
    """Each LLM instance's health, running and queued work."""
    from kernos.kernel.llm.probe import probe

    statuses = await asyncio.gather(*(probe(instance) for instance in settings.llm))
    if args.json:
        print_json({"instances": [status.model_dump() for status in statuses]})
        return 0
    print(f"{'INSTANCE':<14}{'KIND':<10}{'MODEL':<18}{'HEALTHY':<9}{'SLOTS':>6}{'RUNNING':>9}"
          f"{'QUEUED':>8}{'CACHE':>7}  URL")  # fmt: skip
    for st in statuses:
        running = "-" if st.running is None else str(st.running)
        queued = "-" if st.queued is None else str(st.queued)
        cache = "-" if st.cache_hit_rate is None else f"{st.cache_hit_rate:.0%}"
        line = (
            f"{st.name:<14}{st.kind:<10}{st.model:<18}{'yes' if st.healthy else 'no':<9}"
            f"{st.slots:>6}{running:>9}{queued:>8}{cache:>7}  {st.base_url or ''} {st.detail}"
        )
        print(line.rstrip())
    return 0


async def cmd_queues(settings: Settings, args: argparse.Namespace) -> int:
    """Each kernel task queue's backlog and pollers."""
    from kernos.client import connect_temporal
    from kernos.kernel.queues import describe_queues

    queues = await describe_queues(await connect_temporal(settings), settings)
    if args.json:
        print_json({"queues": [queue.model_dump() for queue in queues]})
        return 0
    print(f"{'QUEUE':<28}{'KIND':<10}{'BACKLOG':>8}{'AGE S':>8}{'POLLERS':>9}  BY PRIORITY")
    for q in queues:
        by_priority = " ".join(f"{k}:{v}" for k, v in sorted(q.backlog_by_priority.items()))
        print(
            f"{q.name:<28}{q.kind:<10}{q.backlog:>8}{q.backlog_age_s:>8.1f}{q.pollers:>9}  "
            f"{by_priority}".rstrip()
        )
    return 0


async def cmd_llm_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Start an LLM server with the flags the kernel relies on (or print its command)."""
    from kernos.infra.sglang_server import launch_command, require_sglang

    command = launch_command(
        args.model,
        served_name=args.name,
        port=args.port,
        host=args.host,
        max_running_requests=args.slots,
        context_length=args.context_length,
    )
    if args.dry_run:
        print(shlex.join(command))
        return 0
    require_sglang()
    os.execv(command[0], command)  # the server takes this process's place
