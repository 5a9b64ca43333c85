"""`kernos up`, `status`, `down`, `logs` and `trace`: the embedded stack on this host."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from kernos.cli_output import print_json
from kernos.kernel.errors import ConfigError

if TYPE_CHECKING:
    from kernos.infra.stack import ComponentStatus
    from kernos.kernel.config import Settings
    from kernos.workflows.pool_status import HostPools


#: How long `kernos status` waits for the agent hosts' reports held in Temporal.
_REPORTS_S = 5.0


def _status_table(components: list[ComponentStatus]) -> None:
    print(f"{'COMPONENT':<15}{'HEALTHY':<9}{'PID':>8}  ADDRESS")
    for c in components:
        extra = f"  slots {c.load}/{c.slots} busy" if c.slots is not None else ""
        pid = str(c.pid) if c.pid else "-"
        print(f"{c.name:<15}{'yes' if c.healthy else 'no':<9}{pid:>8}  {c.address}{extra}")


def _pools_table(hosts: list[HostPools]) -> None:
    """The pools of each agent host that reported lately."""
    if not hosts:
        print("pools: no agent host has reported lately")
        return
    print(f"{'POOL':<28}{'HOST':<24}{'PID':>8}{'RUNS':>6}{'AGE':>8}{'IDLE':>8}{'MEMORY':>10}")
    for host in hosts:
        where = f"{host.host}:{host.pid}"
        if not host.limited:
            print(f"{'(no cgroups: memory, processes unbounded)':<28}{where:<24}")
        for pool in host.pools:
            memory = f"{pool.memory_bytes / 2**20:.0f} MiB" if pool.memory_bytes else "-"
            print(
                f"{pool.pool:<28}{where:<24}{pool.pid or '-':>8}{pool.runs:>6}"
                f"{pool.age_s:>7.0f}s{pool.idle_s:>7.0f}s{memory:>10}"
                + (f"  restarted {pool.restarts}x" if pool.restarts else "")
                + (f"  {pool.turned_back} tasks over its share" if pool.turned_back else "")
            )


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Start the embedded stack (or reuse what runs)."""
    from kernos.infra import confine, stack
    from kernos.kernel.config import state_dir

    components = await stack.up(settings, state_dir())
    if args.json:
        print_json({"components": [c.model_dump() for c in components]})
    else:
        _status_table(components)
        print(f"isolation: {confine.report(settings.isolation.mode)[1]}")
        print(f"Temporal UI: http://127.0.0.1:{settings.embedded.ui_port}")
    return 0 if all(c.healthy for c in components) else 1


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Report each component of the embedded stack."""
    from kernos.infra import confine, stack
    from kernos.kernel.config import state_dir
    from kernos.workflows.pool_status import fresh_reports, merged

    components = await stack.status(state_dir())
    confined, isolation = confine.report(
        settings.isolation.mode, settings.isolation.shared_unconfined
    )
    elsewhere, unread = await _reports_in_temporal(settings)
    hosts = merged(fresh_reports(state_dir()), elsewhere)
    if args.json:
        print_json(
            {
                "components": [c.model_dump() for c in components],
                "isolation": {"confined": confined, "said": isolation},
                "agent_hosts": [host.model_dump(mode="json") for host in hosts],
                "agent_hosts_unread": unread,
            }
        )
    else:
        _status_table(components)
        print(f"isolation: {isolation}")
        _pools_table(hosts)
        if unread:
            print(f"(agent hosts on other machines not read: {unread})")
    return 0 if all(c.healthy for c in components) else 3


async def _reports_in_temporal(settings: Settings) -> tuple[list[HostPools], str | None]:
    """The agent hosts' reports held in Temporal, from every machine; or why none were read."""
    from temporalio.service import RPCError, RPCStatusCode

    from kernos.client import connect_temporal
    from kernos.workflows.pool_status import temporal_reports

    workflow_id = settings.isolation.reports_workflow_id
    if not workflow_id:
        return [], "[isolation] reports_workflow_id is off"
    try:
        async with asyncio.timeout(_REPORTS_S):
            client = await connect_temporal(settings, traced=False)
            return await temporal_reports(client, workflow_id), None
    except TimeoutError:
        return [], f"Temporal did not answer within {_REPORTS_S:.0f} s (are kernel workers up?)"
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return [], None  # no host has reported yet
        return [], f"Temporal: {exc}"
    except Exception as exc:  # noqa: BLE001 - the status of the rest is still worth printing
        # Temporal down (the stack is), credentials refused, a query the workers do not know.
        return [], f"{type(exc).__name__}: {exc}"


async def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    """Stop what `kernos up` started."""
    from kernos.infra import stack
    from kernos.kernel.config import state_dir

    stopped = stack.down(state_dir())
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


async def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    """Print the end of a component's log."""
    from kernos.infra import stack
    from kernos.kernel.config import state_dir

    logs = {c.name: c.log for c in await stack.status(state_dir()) if c.log}
    if args.component not in logs:
        known = ", ".join(sorted(logs)) or "none (is the stack up?)"
        raise ConfigError(f"no log for component {args.component!r}; components: {known}")
    print("\n".join(await asyncio.to_thread(_tail, Path(logs[args.component]), args.lines)))
    return 0


def _tail(path: Path, lines: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else []


async def cmd_trace(settings: Settings, args: argparse.Namespace) -> int:
    """Print a run's spans as a tree."""
    from kernos.kernel import telemetry

    path = settings.telemetry.spans_file
    if path is None:
        raise ConfigError(
            "no spans file: set telemetry.spans_file (`kernos up` sets it for the embedded stack)"
        )
    spans = await asyncio.to_thread(telemetry.run_spans, path, args.run_id)
    if not spans:
        raise ConfigError(f"no spans of run {args.run_id!r} in {path}")
    if args.json:
        print_json({"spans": spans})
    else:
        print("\n".join(telemetry.render_tree(spans)))
    return 0
