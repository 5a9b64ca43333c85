"""`kernos storage list/purge`: an agent's files, as the operator sees them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kernos.cli_output import print_json, with_client
from kernos.kernel.errors import InvalidRequest

if TYPE_CHECKING:
    from kernos.client import KernosClient
    from kernos.kernel.config import Settings


def add_storage_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `storage` command group."""
    storage = commands.add_parser("storage", help="agents' files: list, purge deleted ones")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    listing = storage_commands.add_parser("list", help="an agent's files, deleted ones marked")
    purge = storage_commands.add_parser(
        "purge", help="remove deleted files for good (no rollback recovers them after)"
    )
    for command in (listing, purge):
        command.add_argument("--tenant", required=True)
        command.add_argument("--agent", required=True)
        command.add_argument("--json", action="store_true")
        command.set_defaults(handler=cmd_storage)
    listing.add_argument("--prefix", default="")
    purge.add_argument("--path", help="only this deleted file")


async def cmd_storage(settings: Settings, args: argparse.Namespace) -> int:
    """List an agent's files, or purge its deleted ones."""
    from kernos.kernel.file_store import StorageStore
    from kernos.kernel.paths import check_path, check_prefix
    from kernos.kernel.syscall_table import STORAGE_PURGE
    from kernos.kernel.syscalls import check_name

    try:
        check_name("tenant", args.tenant)
        check_name("agent", args.agent)
        if args.storage_command == "list":
            check_prefix(args.prefix)
        elif args.path is not None:
            check_path(args.path)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None

    async def body(client: KernosClient) -> int:
        store = StorageStore(client.pool, settings.storage)
        where = {"tenant": args.tenant, "agent": args.agent}
        if args.storage_command == "list":
            files = await store.listing(
                **where, prefix=args.prefix, include_deleted=True, limit=10_000
            )
            if args.json:
                print_json({"files": [f.model_dump(mode="json") for f in files]})
                return 0
            print(f"{'VERSION':>8}{'SIZE':>10}  {'UPDATED':<20}{'DELETED':<9}PATH")
            for f in files:
                updated = f.updated_at.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{f.version:>8}{f.size:>10}  {updated:<20}{'yes' if f.deleted else '':<9}"
                      f"{f.path}")  # fmt: skip
            return 0
        await client.audit_operator(
            args.tenant, STORAGE_PURGE.name, f"storage:{args.path or '*'}",
            f"purge deleted files of {args.agent}", agent=args.agent,
        )  # fmt: skip
        purged, contents = await store.purge(**where, path=args.path)
        if args.json:
            print_json({"files": purged, "contents": contents})
        else:
            print(f"purged {purged} deleted files and {contents} contents nothing refers to")
        return 0

    return await with_client(settings, body)
