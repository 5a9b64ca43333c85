"""`kernos approvals` and `kernos approve`: requests that wait for a human, and deciding them."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from kernos.cli_output import print_json, with_client

if TYPE_CHECKING:
    from kernos.client import KernosClient
    from kernos.kernel.config import Settings


def add_approval_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `approvals` and `approve` commands."""
    listing = commands.add_parser("approvals", help="requests waiting for a human's approval")
    listing.add_argument("--run")
    listing.add_argument("--tenant")
    listing.add_argument("--all", action="store_true", help="decided and expired ones too")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_approvals)
    approve = commands.add_parser("approve", help="approve (or --deny) a run's waiting request")
    approve.add_argument("run")
    approve.add_argument("--id", help="which approval, when the run waits for several")
    approve.add_argument("--deny", action="store_true")
    approve.add_argument("--reason")
    approve.add_argument(
        "--user",
        default="operator",
        help="who decides; a rule must let them",
    )
    approve.add_argument(
        "--api-key",
        help="decide as this key's user, the key as proof (or $KERNOS_API_KEY); without one, "
        "the operator's role ([database] operator_dsn)",
    )
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(handler=cmd_approve)


async def cmd_approvals(settings: Settings, args: argparse.Namespace) -> int:
    """List approvals, oldest first."""
    from kernos.kernel.approvals import ApprovalStore

    async def body(client: KernosClient) -> int:
        found = await ApprovalStore(client.pool).listing(
            run_id=args.run, tenant=args.tenant, pending_only=not args.all
        )
        if args.json:
            print_json({"approvals": [a.model_dump(mode="json") for a in found]})
            return 0
        print(f"{'APPROVAL':<38}{'STATUS':<10}{'RUN':<26}{'SYSCALL':<14}{'RESOURCE':<24}EXPIRES")
        for a in found:
            print(
                f"{a.id:<38}{a.status:<10}{a.run_id:<26}{a.syscall:<14}{a.resource:<24}"
                f"{a.expires_at:%Y-%m-%d %H:%M:%S}"
            )
            arguments = a.request.get("arguments")
            if isinstance(arguments, str):  # what a tool call would be given: what is decided
                shown = arguments if len(arguments) <= 200 else arguments[:200] + "..."
                print(f"  arguments: {shown}")
        return 0

    return await with_client(settings, body)


async def cmd_approve(settings: Settings, args: argparse.Namespace) -> int:
    """Record a decision on a run's waiting request and wake the run."""
    from kernos.approval_decisions import decide
    from kernos.kernel.api_keys import OPERATOR

    api_key = args.api_key or os.environ.get("KERNOS_API_KEY") or None

    async def body(client: KernosClient) -> int:
        # A key's holder decides as the key's user, whatever --user says (unless it says another).
        approver = (
            client.principal.user if client.principal and args.user == OPERATOR else args.user
        )
        decided = await decide(
            client, args.run, approver=approver, approve=not args.deny, reason=args.reason,
            approval_id=args.id,
        )  # fmt: skip
        if args.json:
            print_json(decided.model_dump(mode="json"))
            return 0
        a = decided.approval
        print(f"{a.status} {a.syscall} on {a.resource} for run {a.run_id} (approval {a.id})")
        if not decided.woken:
            print("the run was not listening; it sees the decision when it next asks")
        return 0

    return await with_client(settings, body, api_key=api_key)
