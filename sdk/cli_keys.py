"""`kernos keys create|list|revoke`: API keys, each a user in a tenant."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from kernos.cli_output import print_json, with_client

if TYPE_CHECKING:
    from kernos.client import KernosClient
    from kernos.kernel.config import Settings


def add_key_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `keys` command group."""
    keys = commands.add_parser("keys", help="API keys: create (shown once), list, revoke")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="a key for a user in a tenant")
    create.add_argument("--user", required=True)
    create.add_argument("--tenant", required=True)
    create.add_argument("--label")
    listing = sub.add_parser("list", help="keys (never their secrets)")
    listing.add_argument("--tenant")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id")
    for command in (create, listing, revoke):
        command.add_argument("--json", action="store_true")
    keys.set_defaults(handler=cmd_keys)


async def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Create, list or revoke API keys; creations and revocations are audited."""
    from kernos.kernel.api_keys import ApiKeyStore

    async def body(client: KernosClient) -> int:
        if args.keys_command == "list":
            keys = await ApiKeyStore(client.pool).listing(args.tenant)
            if args.json:
                print_json({"keys": [key.model_dump(mode="json") for key in keys]})
            for key in [] if args.json else keys:
                state = "revoked" if key.revoked_at else "active"
                print(f"{key.id}  {state:<8} {key.tenant}/{key.user_name}  {key.label or ''}")
            return 0
        # Made and revoked on the operator's role, each appended to the tenant's chain with it.
        if args.keys_command == "create":
            key, token = await client.create_key(
                user=args.user, tenant=args.tenant, label=args.label
            )
        else:
            key = await client.revoke_key(args.id)
            token = None
        if args.json:
            print_json({**key.model_dump(mode="json"), **({"key": token} if token else {})})
        elif token:
            print(token)
            print(f"key {key.id} for {key.tenant}/{key.user_name}: shown once", file=sys.stderr)
        else:
            print(f"revoked key {key.id} ({key.tenant}/{key.user_name})")
        return 0

    return await with_client(settings, body)
