"""The `kernos` command: admission, inspection and workers, for operators on the kernel host."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernos.cli_admin import cmd_budget, cmd_instances, cmd_llm_serve, cmd_queues, cmd_usage
from kernos.cli_approvals import add_approval_commands
from kernos.cli_audit import add_audit_commands
from kernos.cli_keys import add_key_commands
from kernos.cli_memory import add_memory_commands
from kernos.cli_output import print_json, with_client
from kernos.cli_policy import add_policy_commands
from kernos.cli_stack import cmd_down, cmd_logs, cmd_status, cmd_trace, cmd_up
from kernos.cli_storage import add_storage_commands
from kernos.cli_tools import add_tools_commands
from kernos.kernel.errors import ConfigError, KernosError

if TYPE_CHECKING:
    from kernos.client import KernosClient, RunView
    from kernos.kernel.config import Settings
    from kernos.kernel.run_events import RunEvent
    from kernos.kernel.syscalls import RunResult

#: Longest `kernos run` waits, once it has the result, for the run's end to show.
FOLLOW_GRACE_S = 3.0


def _view_json(view: RunView) -> dict[str, Any]:
    record = view.record
    return {
        "run_id": record.run_id,
        "status": view.status,
        "agent": record.agent,
        "tenant": record.tenant,
        "user": record.user,
        "priority": record.priority,
        "model": record.model,
        "api_key_id": record.api_key_id,
        "created_at": record.created_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "waiting_on": view.waiting_on,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "output": record.output,
        "error": record.error,
    }


async def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    """Print the effective settings, secrets masked."""
    print_json(settings.masked())
    return 0


async def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending schema migrations, as the schema's owner role."""
    from kernos.kernel.db.migrate import upgrade

    if settings.database.owner_dsn is None:
        raise ConfigError(
            "migrations run as the schema's owner role: set [database] owner_dsn or "
            "KERNOS_DATABASE__OWNER_DSN (on the embedded stack, `kernos up` applies them)"
        )
    applied = await upgrade(settings.database.owner_dsn.get_secret_value())
    print("applied: " + ", ".join(applied) if applied else "the schema is up to date")
    return 0


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run workers until SIGINT or SIGTERM."""
    from kernos.client import connect_temporal
    from kernos.worker import WorkerGroup, process_of

    client = await connect_temporal(
        settings, process_of(args.kind), component=f"{args.kind}-worker"
    )
    group = await WorkerGroup.create(client, settings, args.kind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(group.run())
    print(f"kernos worker ({args.kind}) polling {settings.temporal.address}", flush=True)
    await asyncio.wait(
        [running, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    await group.shutdown()
    await running
    return 0


async def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the gateway until SIGINT or SIGTERM."""
    import uvicorn

    from kernos.client import KernosClient
    from kernos.gateway import gateway_config, served_tls

    served_tls(settings, args.host or settings.gateway.host)  # bad settings before connecting
    # Connected before it listens: a refused connection (a certificate, an address) is one
    # line and an exit, not a traceback from the app's start-up.
    client = await KernosClient.connect(settings, process="gateway")
    await uvicorn.Server(gateway_config(settings, args.host, args.port, client=client)).serve()
    return 0


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Submit a run; wait for its result unless --no-wait."""
    from kernos.client import check_spec

    spec: dict[str, Any] = {
        "agent": args.agent,
        "task": args.task,
        "tenant": args.tenant,
        "user": args.user,
        "priority": args.priority,
        "model": args.model,
        "policy": args.policy,
    }

    given = {k: v for k, v in spec.items() if v is not None}
    api_key = args.api_key or os.environ.get("KERNOS_API_KEY") or None
    gateway = args.gateway or os.environ.get("KERNOS_GATEWAY_URL") or None
    if gateway is not None:
        return await _run_through_gateway(gateway, api_key, given, args)
    # Bad input is refused before anything is contacted.
    checked = check_spec(settings, given)

    async def body(client: KernosClient) -> int:
        handle = await client.submit(checked)
        if args.no_wait:
            if args.json:
                print_json({"run_id": handle.run_id, "ui_url": handle.ui_url()})
            else:
                print(handle.run_id)
            return 0
        if args.json:
            _print_result(await handle.result(), True, handle.ui_url())
            return 0
        print(f"run {handle.run_id}: {handle.ui_url()}", file=sys.stderr, flush=True)
        shown = await _followed(handle.run_id, client.stream(handle.run_id), handle.result())
        _print_result(shown[0], False, handle.ui_url(), shown[1])
        return 0

    return await with_client(settings, body, api_key=api_key, traced=True)


async def _run_through_gateway(
    url: str, api_key: str | None, spec: dict[str, Any], args: argparse.Namespace
) -> int:
    """`kernos run` from a machine with an API key only: the gateway checks and admits."""
    from kernos.remote import RemoteClient

    if api_key is None:
        raise ConfigError("--gateway needs an API key: --api-key or $KERNOS_API_KEY")
    async with RemoteClient(url, api_key) as remote:
        run_id = await remote.submit(spec)
        if args.no_wait:
            print_json({"run_id": run_id}) if args.json else print(run_id)
            return 0
        if args.json:
            _print_result(await remote.result(run_id), True, None)
            return 0
        print(f"run {run_id} (through {url})", file=sys.stderr, flush=True)
        result, shown = await _followed(run_id, remote.stream(run_id), remote.result(run_id))
    _print_result(result, False, None, shown)
    return 0


async def _followed(
    run_id: str, events: AsyncIterator[RunEvent], result: Awaitable[RunResult]
) -> tuple[RunResult, str]:
    """The run's result, its events shown meanwhile; and the text shown last, if any.

    Live on a terminal (the answer as it is written), plain lines otherwise.
    """
    from kernos.cli_follow import RunFollower

    follower = RunFollower(run_id, sys.stdout, sys.stderr, live=sys.stdout.isatty())
    following = asyncio.create_task(follower.follow(events))
    try:
        finished = await result
        # The end's event follows the result within moments: what was shown is then complete.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(following), FOLLOW_GRACE_S)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await following
    return finished, follower.last_text if follower.live else ""


def _print_result(result: RunResult, as_json: bool, ui: str | None, shown: str = "") -> None:
    """A finished run: its output on stdout, its figures on stderr (or all as JSON).

    The output is not printed again where it is the text the terminal showed last, live.
    """
    if as_json:
        data: dict[str, Any] = {"run_id": result.run_id}
        if ui is not None:
            data["ui_url"] = ui
        print_json(
            data
            | {
                "status": "completed",
                "output": result.output,
                "syscalls": result.syscalls,
                "usage": result.usage.model_dump(),
            }
        )
        return
    if not shown or shown.strip() != result.output.strip():
        print(result.output)
    where = f"\nin the Temporal UI: {ui}" if ui is not None else ""
    print(
        f"run {result.run_id}: {result.syscalls} syscalls, "
        f"{result.usage.input_tokens} input + {result.usage.output_tokens} output tokens{where}",
        file=sys.stderr,
    )


async def cmd_ps(settings: Settings, args: argparse.Namespace) -> int:
    """List runs, newest first."""

    async def body(client: KernosClient) -> int:
        views = await client.list_runs(limit=args.limit, tenant=args.tenant)
        if args.json:
            print_json({"runs": [_view_json(view) for view in views]})
            return 0
        print(f"{'RUN':<26} {'STATUS':<10} {'AGENT':<12} {'TENANT/USER':<24} {'TOKENS':>8}  NOTE")
        for view in views:
            record = view.record
            tokens = record.input_tokens + record.output_tokens
            note = view.waiting_on or record.error or ""
            print(
                f"{record.run_id:<26} {view.status:<10} {record.agent:<12} "
                f"{record.tenant + '/' + record.user:<24} {tokens:>8}  {note}"
            )
        return 0

    return await with_client(settings, body)


async def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    """Show one run: status, each syscall with its decision and tokens, the result."""
    from kernos.client import ui_url

    async def body(client: KernosClient) -> int:
        view = await client.show(args.run_id)
        record = view.record
        data = _view_json(view)
        data["ui_url"] = ui_url(settings, view.record.run_id, view.record.first_execution_run_id)
        data["syscalls"] = [call.model_dump() for call in view.syscalls]
        if args.json:
            print_json(data)
            return 0
        for key in ("run_id", "status", "agent", "tenant", "user", "priority", "model"):
            print(f"{key + ':':<14}{data[key]}")
        print(f"{'UI:':<14}{data['ui_url']}")
        if record.api_key_id:
            print(f"{'submitted:':<14}with API key {record.api_key_id}")
        if view.waiting_on:
            print(f"{'waiting on:':<14}{view.waiting_on}")
        print(f"{'tokens:':<14}{data['input_tokens']} input, {data['output_tokens']} output")
        print("syscalls:")
        for call in view.syscalls:
            tokens = (
                f"{call.input_tokens}+{call.output_tokens} tokens"
                if call.input_tokens is not None
                else ""
            )
            outcome = call.outcome or ("-" if call.decision == "deny" else "in flight")
            decision = call.decision if call.basis == "policy" else f"{call.decision}:{call.basis}"
            print(
                f"  {call.syscall:<10} {call.resource:<24} attempt {call.attempt:<3} "
                f"{decision:<6} {outcome:<10} {tokens}"
                + (f"  {call.error_type}" if call.error_type else "")
                + (f"  ({call.reason})" if call.reason else "")
            )
        if view.record.output is not None:
            print(f"output:\n{view.record.output}")
        if view.record.error:
            print(f"error: {view.record.error}")
        return 0

    return await with_client(settings, body)


async def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    """Cancel a run."""

    async def body(client: KernosClient) -> int:
        await client.runs.get(args.run_id)
        grace = args.terminate_after
        if await client.handle(args.run_id).cancel(terminate_after_s=grace):
            print(f"terminated {args.run_id}: still going {grace:g} s after being cancelled")
        else:
            print(f"cancellation requested for {args.run_id}")
        return 0

    return await with_client(settings, body)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kernos`."""
    parser = argparse.ArgumentParser(prog="kernos", description=__doc__)
    parser.add_argument("--config", type=Path, help="settings file (default: ./kernos.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    config = commands.add_parser("config", help="print the effective settings, secrets masked")
    config.set_defaults(handler=cmd_config)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations").set_defaults(
        handler=cmd_db_upgrade
    )

    worker = commands.add_parser("worker", help="run agent and/or kernel workers")
    worker.add_argument("--kind", choices=["agent", "kernel", "all"], default="all")
    worker.set_defaults(handler=cmd_worker)

    gateway = commands.add_parser(
        "gateway", help="serve the HTTP gateway: admission for clients with an API key"
    )
    gateway.add_argument("--host", help="default: [gateway] host")
    gateway.add_argument("--port", type=int, help="default: [gateway] port")
    gateway.set_defaults(handler=cmd_gateway)

    run = commands.add_parser("run", help="run an agent on a task")
    run.add_argument("agent")
    run.add_argument("task")
    run.add_argument("--tenant", help="with an API key: another tenant, if a rule allows it")
    run.add_argument("--user", help="without an API key only: the key says who you are")
    run.add_argument("--api-key", help="act as this key's user in its tenant (or $KERNOS_API_KEY)")
    run.add_argument(
        "--gateway",
        help="submit through the kernel's HTTP gateway with the API key, needing no other "
        "credentials (or $KERNOS_GATEWAY_URL)",
    )
    run.add_argument("--priority", type=int, help="1 (first) to 5 (last); default 3")
    run.add_argument("--model")
    run.add_argument(
        "--policy",
        choices=["fifo", "rr", "priority", "fair"],
        help="scheduling (default: settings)",
    )
    run.add_argument("--no-wait", action="store_true", help="print the run id and return")
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=cmd_run)

    ps = commands.add_parser("ps", help="list runs")
    ps.add_argument("--limit", type=int, default=20)
    ps.add_argument("--tenant")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(handler=cmd_ps)

    show = commands.add_parser("show", help="show a run and its syscalls")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)

    cancel = commands.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run_id")
    cancel.add_argument(
        "--terminate-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="terminate the run if it is still going this long after the cancellation "
        "(agent code may ignore one; default 10)",
    )
    cancel.set_defaults(handler=cmd_cancel)

    instances = commands.add_parser("instances", help="LLM instances: health, running, queued")
    instances.add_argument("--json", action="store_true")
    instances.set_defaults(handler=cmd_instances)
    queues = commands.add_parser("queues", help="task queues: backlog and pollers")
    queues.add_argument("--json", action="store_true")
    queues.set_defaults(handler=cmd_queues)

    llm = commands.add_parser("llm", help="LLM servers")
    llm_commands = llm.add_subparsers(dest="llm_command", required=True)
    serve = llm_commands.add_parser(
        "serve", help="start an SGLang server (GPU host) with the flags the kernel relies on"
    )
    serve.add_argument("--kind", choices=["sglang"], default="sglang")
    serve.add_argument("--model", required=True, help="model path or Hugging Face id")
    serve.add_argument("--name", required=True, help="the model name runs ask for")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=30000)
    serve.add_argument("--slots", type=int, help="max running requests (the instance's slots)")
    serve.add_argument("--context-length", type=int)
    serve.add_argument("--dry-run", action="store_true", help="print the command, start nothing")
    serve.set_defaults(handler=cmd_llm_serve)

    usage = commands.add_parser("usage", help="tokens per tenant, with budgets")
    usage.add_argument("--tenant")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(handler=cmd_usage)
    budget = commands.add_parser("budget", help="a tenant's token budget")
    budget_commands = budget.add_subparsers(dest="budget_command", required=True)
    budget_set = budget_commands.add_parser("set", help="cap a tenant's tokens (input + output)")
    budget_set.add_argument("tenant")
    budget_set.add_argument("tokens", type=int)
    budget_set.set_defaults(handler=cmd_budget)
    budget_clear = budget_commands.add_parser("clear", help="lift a tenant's cap")
    budget_clear.add_argument("tenant")
    budget_clear.set_defaults(handler=cmd_budget)

    add_memory_commands(commands)
    add_audit_commands(commands)
    add_approval_commands(commands)
    add_tools_commands(commands)
    add_policy_commands(commands)
    add_key_commands(commands)
    add_storage_commands(commands)

    up = commands.add_parser("up", help="start the embedded stack (state in ./.kernos)")
    up.add_argument("--json", action="store_true")
    up.set_defaults(handler=cmd_up)
    status = commands.add_parser("status", help="health of the embedded stack's components")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)
    down = commands.add_parser("down", help="stop what `kernos up` started")
    down.set_defaults(handler=cmd_down)
    trace = commands.add_parser("trace", help="a run's spans as a tree")
    trace.add_argument("run_id")
    trace.add_argument("--json", action="store_true")
    trace.set_defaults(handler=cmd_trace)
    logs = commands.add_parser("logs", help="the end of a component's log")
    logs.add_argument("component", nargs="?", default="kernel-worker")
    logs.add_argument("--lines", type=int, default=100)
    logs.set_defaults(handler=cmd_logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: every error is one line on stderr and a non-zero exit, never a traceback.

    What a command needs is imported when it runs: `kernos --help` loads no client, and `ps`
    no policy engine (`bench/cli_startup.py` measures them).
    """
    args = build_parser().parse_args(argv)
    try:
        # Agent workers run untrusted code: they never read the kernel's credentials file. No
        # long-running process (worker, gateway, LLM server) reads the operator's.
        agent_worker = args.command == "worker" and args.kind == "agent"
        settings = load_settings(
            args.config,
            credentials=not agent_worker,
            operator=args.command not in ("worker", "gateway", "llm"),
        )
        try:
            status: int = asyncio.run(args.handler(settings, args))
        finally:
            telemetry = sys.modules.get("kernos.kernel.telemetry")
            if telemetry is not None:
                telemetry.flush()
    except KernosError as exc:
        print(f"kernos: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The database's and Temporal's errors, by their modules: a command that reached
        # neither has not imported them.
        said = _unreachable(exc)
        if said is None:
            raise
        print(f"kernos: error: {said}", file=sys.stderr)
        return 1
    return status


def load_settings(config: Path | None, *, credentials: bool, operator: bool) -> Settings:
    """The settings (`kernos.kernel.config.load_settings`), loaded once a command runs."""
    from kernos.kernel.config import load_settings as load

    return load(config, credentials=credentials, operator=operator)


def _unreachable(exc: Exception) -> str | None:
    """What to say of the database's or Temporal's error; None for any other."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot reach the database: {reason}"
    service = sys.modules.get("temporalio.service")
    if service is not None and isinstance(exc, service.RPCError):
        return f"Temporal refused: {exc.message}"
    return None


def entry() -> None:
    """The console script: `main`, then an exit the Temporal client cannot turn into a crash."""
    from kernos.infra.process import exit_process

    exit_process(main())


if __name__ == "__main__":
    entry()
