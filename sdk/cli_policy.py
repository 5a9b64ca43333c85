"""`kernos policy list|test|add|remove|import`: the access rules, as the operator edits them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from kernos.kernel.errors import AccessDenied, ConfigError

if TYPE_CHECKING:
    from kernos.kernel.access import AccessManager
    from kernos.kernel.config import Settings

#: What an edit of the rules for tenant T is decided as: `policy.edit` on `policy:T` (`policy:*`
#: for a rule of every tenant).


def add_policy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `policy` command group."""
    policy = commands.add_parser("policy", help="access rules: list, test, add, remove, import")
    sub = policy.add_subparsers(dest="policy_command", required=True)
    listing = sub.add_parser("list", help="every rule")
    listing.add_argument("--json", action="store_true")
    test = sub.add_parser("test", help="what the rules decide for one request")
    for name in ("user", "agent", "tenant", "resource", "syscall"):
        test.add_argument(name)
    for name, text in [("add", "add a rule"), ("remove", "remove a rule")]:
        edit = sub.add_parser(name, help=f"{text} (database store; workers reload at once)")
        edit.add_argument("rule", nargs="+", help="as in a CSV policy: p|g|a and its fields")
        edit.add_argument("--user", default="operator", help="who edits; a rule must let them")
    load = sub.add_parser("import", help="add a CSV policy file's rules to the database")
    load.add_argument("file", type=Path)
    load.add_argument(
        "--user", default="operator", help="who edits; a rule must let them edit policy:*"
    )
    policy.set_defaults(handler=cmd_policy)


async def cmd_policy(settings: Settings, args: argparse.Namespace) -> int:
    """Run one `policy` subcommand."""
    from kernos.kernel.access import check_rule, read_policy_file
    from kernos.kernel.db.pool import operator_dsn
    from kernos.kernel.policy_store import PolicyStore, load_access

    if settings.policy.store == "file" and args.policy_command in ("add", "remove", "import"):
        raise ConfigError(
            f"the rules are in {settings.policy.resolved_policy_path()} ([policy] store = "
            '"file"): edit that file, or set [policy] store = "database"'
        )
    access = await load_access(settings)
    if args.policy_command in ("list", "test"):
        return _read(access, args)
    # The kernel's role reads the rules; only the operator's edits them.
    store = PolicyStore(operator_dsn(settings.database))
    try:
        if args.policy_command == "import":
            rules = read_policy_file(args.file)
            # An empty table is the first import: nobody could be allowed to edit it yet.
            bootstrap = not access.rules()
            await _may_edit(
                settings, access, args.user, "*", f"import {args.file}", bootstrap=bootstrap
            )
            existing = {tuple(present) for present in access.rules()}
            new = [list(r) for r in dict.fromkeys(tuple(r) for r in rules) if r not in existing]
            for added in new:
                await store.add(added)
            print(f"imported {len(new)} rules from {args.file} ({len(existing)} were there)")
            return 0
        rule = check_rule([field.strip() for field in args.rule], "the rule")
        present = rule in access.rules()
        await _may_edit(settings, access, args.user, rule[3], f"{args.policy_command} {rule}")
        if args.policy_command == "add":
            if present:
                print(f"already there: {', '.join(rule)}")
                return 0
            await store.add(rule)
        else:
            if not present:
                print(f"no such rule: {', '.join(rule)}")
                return 1
            await store.remove(rule)
        done = {"add": "added", "remove": "removed"}[args.policy_command]
        print(f"{done}: {', '.join(rule)}")
        return 0
    finally:
        await store.aclose()


def _read(access: AccessManager, args: argparse.Namespace) -> int:
    from kernos.kernel.access import Subject

    if args.policy_command == "list":
        rules = access.rules()
        if args.json:
            print(json.dumps([{"type": r[0], "fields": r[1:]} for r in rules], indent=2))
        else:
            for rule in rules:
                print(", ".join(rule))
        return 0
    subject = Subject("", args.tenant, args.user, args.agent)
    decision = access.decide(subject, args.syscall, args.resource)
    print(f"{decision.word}: {decision.rule or decision.reason}")
    if decision.approval_rule:
        print(f"needs approval: {decision.approval_rule}")
    return 0 if decision.allowed else 1


async def _may_edit(
    settings: Settings,
    access: AccessManager,
    user: str,
    tenant: str,
    what: str,
    *,
    bootstrap: bool = False,
) -> None:
    """Raise AccessDenied unless `user` may edit rules of `tenant`; audit the attempt.

    A `bootstrap` (the first rules of an empty table) is allowed to the operator's role. The
    attempt is appended on the operator's connection: the kernel's role appends no allowed edit.
    """
    from kernos.kernel.access import Decision, Subject
    from kernos.kernel.audit import AuditLog
    from kernos.kernel.db.pool import open_pool
    from kernos.kernel.syscall_table import POLICY_EDIT

    edit = POLICY_EDIT.name
    subject = Subject("", tenant, user, "*")
    resource = f"policy:{tenant}"
    decision = access.decide(subject, edit, resource)
    if bootstrap:
        decision = Decision(True, "bootstrap: the rules table was empty", None)
    recorded = Decision(
        decision.allowed,
        decision.rule,
        what
        if decision.allowed
        else f"{user!r} may not edit rules of tenant {tenant!r} "
        f"(no rule allows {edit} on {resource})",
        "policy",
    )
    pool = await open_pool(settings.database, operator=True)
    try:
        await AuditLog(pool).record_operator(subject, edit, resource, recorded)
    finally:
        await pool.close()
    if not decision.allowed:
        raise AccessDenied(recorded.reason or "denied")
