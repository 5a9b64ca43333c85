"""`kernos audit` and `kernos audit verify`: what every agent was allowed and denied, provably."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import TYPE_CHECKING

from kernos.cli_output import print_json, with_client
from kernos.kernel.errors import InvalidRequest

if TYPE_CHECKING:
    from kernos.client import KernosClient
    from kernos.kernel.audit_chain import AuditRow
    from kernos.kernel.config import Settings


def add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `audit` command group."""
    audit = commands.add_parser(
        "audit", help="the audit log: list (JSON lines with --json) or verify its hash chains"
    )
    audit.add_argument("--run", help="one run's rows")
    audit.add_argument("--tenant", help="one tenant's rows")
    audit.add_argument("--since", type=_timestamp, help="rows at or after an ISO 8601 time")
    audit.add_argument("--last", type=int, help="only the last N matching rows")
    audit.add_argument(
        "--json", action="store_true", help="one JSON object per line, hashes included (export)"
    )
    audit.set_defaults(handler=cmd_audit)
    audit_commands = audit.add_subparsers(dest="audit_command")
    check = audit_commands.add_parser(
        "verify", help="check every tenant's chain and its anchor; name the first broken row"
    )
    check.add_argument("--tenant", dest="chain", help="one tenant's chain only")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=cmd_audit_verify)


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-11-26 or 2026-11-26T09:30:00+00:00"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def _line(row: AuditRow) -> str:
    who = f"{row.tenant}/{row.user_name}/{row.agent}" if row.tenant else "(no run record)"
    why = row.rule if row.decision == "allow" else row.reason
    return (
        f"{row.id:>7} {row.at.astimezone().strftime('%Y-%m-%d %H:%M:%S')} {row.decision:<5} "
        f"{row.syscall:<15} {row.resource:<30} {who:<30} {row.run_id or row.workflow_id} "
        f"{why or ''}"
    )


async def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """List audit rows, oldest first; `--json` writes JSON lines for export."""
    from kernos.kernel.audit_chain import select_rows

    if args.last is not None and args.last < 1:
        raise InvalidRequest(f"--last must be at least 1, not {args.last}")

    async def body(client: KernosClient) -> int:
        rows = select_rows(
            client.pool, run=args.run, tenant=args.tenant, since=args.since, last=args.last
        )
        if not args.json:
            print(
                f"{'ID':>7} {'AT':<19} {'DEC':<5} {'SYSCALL':<15} {'RESOURCE':<30} "
                f"{'TENANT/USER/AGENT':<30} RUN REASON"
            )
        async for row in rows:
            print(json.dumps(row.model_dump(mode="json")) if args.json else _line(row))
        return 0

    return await with_client(settings, body)


async def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Verify every chain against its hashes and its anchor; exit 1 if any is broken."""
    from kernos.kernel.audit_anchor import all_anchors
    from kernos.kernel.audit_chain import verify

    async def body(client: KernosClient) -> int:
        anchors = await all_anchors(client.temporal, settings)
        checks = await verify(client.pool, anchors.chains, args.chain)
        # An anchor someone else sent is ignored, and is itself a disagreement to report; so is
        # a sink that breaks or disagrees with Temporal.
        ok = all(check.ok for check in checks) and not anchors.ignored and not anchors.problems
        if args.json:
            print_json(
                {
                    "ok": ok,
                    "chains": [check.model_dump(mode="json") for check in checks],
                    "ignored_anchors": anchors.ignored,
                    "anchor_problems": anchors.problems,
                }
            )
        else:
            for check in checks:
                name = repr(check.chain) if check.chain else "(no run record)"
                anchored = (
                    f", {check.anchors} anchors up to seq {check.anchor.seq}"
                    if check.anchor
                    else ""
                )
                status = "ok" if check.ok else f"BROKEN: {check.problem}"
                print(f"chain {name}: {check.rows} rows{anchored}: {status}")
            for ignored in anchors.ignored:
                print(f"IGNORED anchor {ignored}")
            for problem in anchors.problems:
                print(f"BROKEN anchors: {problem}")
            if not checks:
                print("the audit log is empty")
        return 0 if ok else 1

    return await with_client(settings, body)
