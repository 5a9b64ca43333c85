"""`kernos memory list/search/delete`: what agents remember, as the operator sees it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kernos.cli_output import print_json, with_client
from kernos.kernel.errors import InvalidRequest

if TYPE_CHECKING:
    from kernos.client import KernosClient
    from kernos.kernel.config import Settings
    from kernos.kernel.syscalls import MemoryItem


def add_memory_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `memory` command group."""
    memory = commands.add_parser("memory", help="agents' memories: list, search, delete")
    memory_commands = memory.add_subparsers(dest="memory_command", required=True)
    for name, text in [
        ("list", "a scope's items, newest first"),
        ("search", "a scope's items nearest in meaning to a query"),
        ("delete", "forget an item"),
    ]:
        command = memory_commands.add_parser(name, help=text)
        command.add_argument("--tenant", required=True)
        where = command.add_mutually_exclusive_group(required=True)
        where.add_argument("--agent", help="the agent's own memory")
        where.add_argument("--scope", help="a shared scope")
        if name == "search":
            command.add_argument("query")
            command.add_argument("-k", type=int, default=10)
        if name == "list":
            command.add_argument("--limit", type=int, default=50)
        if name == "delete":
            command.add_argument("id")
        command.add_argument("--json", action="store_true")
        command.set_defaults(handler=cmd_memory)


def _scope(args: argparse.Namespace) -> str:
    from kernos.kernel.syscalls import check_name

    try:
        check_name("tenant", args.tenant)
        if args.scope is not None:
            return f"shared/{check_name('scope', args.scope)}"
        return f"agent/{check_name('agent', args.agent)}"
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _print(items: list[MemoryItem], as_json: bool) -> None:
    if as_json:
        print_json({"items": [item.model_dump(mode="json") for item in items]})
        return
    print(f"{'ID':<38}{'SCORE':>7}  {'UPDATED':<20}{'OWNER':<14}CONTENT")
    for item in items:
        score = "" if item.score is None else f"{item.score:.3f}"
        content = " ".join(item.content.split())
        content = content if len(content) <= 60 else content[:57] + "..."
        updated = item.updated_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{item.id:<38}{score:>7}  {updated:<20}{item.owner:<14}{content}")


async def cmd_memory(settings: Settings, args: argparse.Namespace) -> int:
    """List, search or delete a tenant's memory items in one scope."""
    from kernos.kernel.embeddings import build_embedder
    from kernos.kernel.memory_store import MemoryStore
    from kernos.kernel.syscall_table import MEMORY_ERASE

    scope = _scope(args)

    async def body(client: KernosClient) -> int:
        store = MemoryStore(client.pool, settings.memory)
        if args.memory_command == "list":
            items = await store.page(tenant=args.tenant, scope=scope, filter={}, limit=args.limit)
            _print(items, args.json)
        elif args.memory_command == "search":
            embedder = build_embedder(settings.memory)
            try:
                [vector] = await embedder.embed([args.query])
            finally:
                await embedder.aclose()
            items = await store.search(
                tenant=args.tenant, scope=scope, embedding=vector, k=args.k, filter={},
                min_score=None,
            )  # fmt: skip
            _print(items, args.json)
        else:
            await client.audit_operator(
                args.tenant, MEMORY_ERASE.name, f"memory:{scope}", f"delete item {args.id}"
            )
            deleted = await store.delete(tenant=args.tenant, scope=scope, item_id=args.id)
            if args.json:
                print_json({"id": args.id, "deleted": deleted})
            else:
                print(f"{args.id}: {'deleted' if deleted else f'not in {scope}'}")
            return 0 if deleted else 1
        return 0

    return await with_client(settings, body)
