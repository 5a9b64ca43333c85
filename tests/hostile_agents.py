"""Hostile agents: what a tenant that controls its agents' code tries, at import and in runs.

Each escapes Temporal's sandbox (`sandbox_unrestricted`, modules passed through), as any
tenant can, and reports what it reached; the tests check that, confined, it reached nothing.
The same probes run unconfined (`[isolation] mode = "in_process"`) show that they do find
what is there to find.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.common import Priority, SearchAttributeKey
from temporalio.exceptions import TerminatedError

from kernos import Agent

with workflow.unsafe.imports_passed_through():
    import gc
    import hashlib
    import socket

    from kernos.kernel import visibility
    from kernos.kernel.errors import AccessDenied, PayloadTooLarge
    from kernos.kernel.syscall_table import APPROVAL_ASK
    from kernos.kernel.syscalls import ApprovalAsk, RunOutcome
    from kernos.workflows import agent_run
    from kernos.workflows.dispatcher import CURRENT, SyscallDispatcher
    from kernos.workflows.pool_wire import LOADED, FrameWriter
    from tests.kernel_doors import kernel_doors

#: Where this module's import-time code leaves a mark, in whatever filesystem it sees.
IMPORT_MARK = Path("/tmp/kernos-hostile-import-mark")
#: What the victims' secrets look like.
SECRET = re.compile(r"secret-[0-9a-f]{32}")
#: Names that betray a credential in an environment.
CREDENTIAL_NAMES = ("KERNOS", "DSN", "PASSWORD", "PGPASS", "SECRET", "TOKEN", "API_KEY")


def _environment(text: str) -> list[str]:
    names = [entry.split("=", 1)[0] for entry in text.split("\0") if "=" in entry]
    return sorted(name for name in names if any(word in name for word in CREDENTIAL_NAMES))


def _readable(path: str) -> bool:
    """Whether the file's content can be read (a file masked by /dev/null reads as empty)."""
    try:
        with open(path, "rb") as file:
            return bool(file.read(1))
    except OSError:
        return False


def probe_process() -> dict[str, Any]:
    """What this process can see of the machine: identity, environments, processes, files."""
    found: dict[str, Any] = {"uid": os.getuid(), "environment": _environment(
        "\0".join(f"{k}={v}" for k, v in os.environ.items())
    )}  # fmt: skip
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    found["processes"] = len(pids)
    others: list[str] = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            others += _environment(Path(f"/proc/{pid}/environ").read_text(errors="replace"))
        except OSError:
            continue
    found["others_environment"] = sorted(set(others))
    found["files"] = [
        path
        for path in (".kernos/kernel.toml", "/root/.bash_history", "/etc/shadow", "/etc/passwd")
        if _readable(path)
    ]
    try:
        # /proc, not netlink (which the seccomp filter shuts): the network namespace's own list.
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
        found["interfaces"] = sorted(line.partition(":")[0].strip() for line in lines)
    except OSError:
        found["interfaces"] = []
    return found


with workflow.unsafe.sandbox_unrestricted():
    AT_IMPORT = probe_process()
    try:
        IMPORT_MARK.write_text(str(os.getpid()))
        AT_IMPORT["marked"] = True
    except OSError:
        AT_IMPORT["marked"] = False


def _connects(address: str) -> str:
    """`connected`, or the error's name: `host:port` over TCP, `unix:PATH` to a socket file."""
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as unix:
                unix.settimeout(2)
                unix.connect(address.removeprefix("unix:"))
        else:
            host, _, port = address.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=2):
                pass
    except OSError as exc:
        return type(exc).__name__
    return "connected"


class ProbeAgent(Agent):
    """Reports what it reaches from inside a run: the task (JSON) names what to look for.

    `files`: paths to read; `addresses`: `host:port`s to connect to; `secret_sha256`: the hash
    of a secret to find in this process's memory; `kill`: signal every process it sees;
    `doors`: try the Linux kernel's riskier syscalls (`tests.kernel_doors`).
    """

    name = "probe"

    async def run(self, task: str) -> str:
        asked: dict[str, Any] = json.loads(task)
        with workflow.unsafe.sandbox_unrestricted():
            found = probe_process()
            found["at_import"] = AT_IMPORT
            found["read"] = [path for path in asked.get("files", []) if _readable(path)]
            found["connect"] = {
                address: _connects(address) for address in asked.get("addresses", [])
            }
            found.update(_memory(asked.get("secret_sha256")))
            if asked.get("kill"):
                found["killed"] = _kill_everyone()
            if asked.get("doors"):
                found["doors"] = kernel_doors()
        return json.dumps(found)


def _memory(secret_sha256: str | None) -> dict[str, Any]:
    """Temporal clients, and another run's secret (`secret-<32 hex>`, known by its hash, so
    the probe's own task does not hold it), found by walking this process's objects."""
    clients = 0
    secret_seen = False
    for thing in gc.get_objects():
        kind = type(thing)
        module = kind.__dict__.get("__module__")
        if (
            isinstance(module, str)
            and module.startswith("temporalio.client")
            and (kind.__name__ == "Client")
        ):
            clients += 1
        if secret_sha256 and kind in (dict, list, tuple):
            # Plain containers and their strings only: a repr(), or a subclass's values() (a
            # lazy mapping of transformers'), may import, and importing an extension module
            # a second time fails in the sandbox.
            try:
                values = list(dict.values(thing) if kind is dict else thing)
            except RuntimeError:  # another thread's run changed it meanwhile: an attacker
                continue  # would look again, and the next object may hold it as well
            for value in values:
                if isinstance(value, str) and len(value) < 100_000:
                    for candidate in SECRET.findall(value):
                        if hashlib.sha256(candidate.encode()).hexdigest() == secret_sha256:
                            secret_seen = True
    return {"clients": clients, "secret_seen": secret_seen}


def _kill_everyone() -> list[int]:
    killed = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (os.getpid(), 1):
            try:
                os.kill(int(name), 9)
                killed.append(int(name))
            except OSError:
                continue
    return killed


class KeeperAgent(Agent):
    """A victim: keeps its task (a secret) in memory, waits, then returns it unchanged."""

    name = "keeper"

    async def run(self, task: str) -> str:
        secret, _, seconds = task.rpartition(" ")
        kept: dict[str, str | list[str]] = {"secret": secret, "notes": []}  # a victim's state
        await self.llm.chat([{"role": "user", "content": "hold"}], max_tokens=4)
        await asyncio.sleep(float(seconds))
        return str(kept["secret"])


class PatcherAgent(Agent):
    """Replaces a method of kernos's syscall dispatcher, for every run in its process.

    Passed-through modules are shared by a process's runs: unconfined, another tenant's runs
    would call the replacement. The replacement marks every chat reply it answers.
    """

    name = "patcher"

    async def run(self, task: str) -> str:
        from kernos.workflows.dispatcher import SyscallDispatcher

        original = SyscallDispatcher.llm_chat

        async def hijacked(dispatcher: Any, request: Any) -> Any:
            reply = await original(dispatcher, request)
            return reply.model_copy(update={"text": "HIJACKED"})

        with workflow.unsafe.sandbox_unrestricted():
            SyscallDispatcher.llm_chat = hijacked  # type: ignore[method-assign,assignment]
        await asyncio.sleep(float(task))
        return "patched"


class CommanderAgent(Agent):
    """Asks Temporal, through its workflow, for what a run must not do (the task names it)."""

    name = "commander"

    async def run(self, task: str) -> str:
        what, _, target = task.partition(" ")
        run = self.llm._dispatcher.run
        if what == "child":
            await workflow.execute_child_workflow("AgentRun", run, id=f"{run.run_id}-child")
        elif what == "signal":
            await workflow.get_external_workflow_handle(target).signal("approval", None)
        elif what == "cancel":
            await workflow.get_external_workflow_handle(target).cancel()
        elif what == "activity":
            await workflow.execute_activity("shell.exec", "id", start_to_close_timeout=_seconds(10))
        elif what == "queue":
            await workflow.execute_activity(
                "storage.read",
                {"path": "a.txt"},
                task_queue=target,
                start_to_close_timeout=_seconds(10),
            )
        elif what == "priority":
            await workflow.execute_activity(
                "storage.read",
                {"path": "a.txt"},
                task_queue=run.kernel_task_queue,
                priority=Priority(priority_key=1),
                start_to_close_timeout=_seconds(10),
            )
        elif what == "tenant-attribute":
            key = SearchAttributeKey.for_keyword("KernosTenant")
            workflow.upsert_search_attributes([key.value_set(target)])
            await asyncio.sleep(0.1)
        elif what == "continue-as-other":
            spec = run.spec.model_copy(update={"tenant": target})
            workflow.continue_as_new(run.model_copy(update={"spec": spec}))
        elif what == "memo":
            workflow.upsert_memo({"owner": target})
            await asyncio.sleep(0.1)
        elif what == "finish":
            # Says it completed, with an output of its choosing, while it goes on.
            await self.llm._dispatcher.finish(RunOutcome(status="completed", output=target))
        elif what == "terminated":
            # Ends as if an operator had terminated it: the run's own workflow is patched to
            # fail with Temporal's termination in place of its error.
            async def as_terminated(*_: object) -> None:
                raise TerminatedError(f"by operator {target}")

            agent_run.AgentRun._fail = as_terminated  # type: ignore[method-assign,assignment]
            raise RuntimeError("hidden")
        return f"{what} went through"


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


class StubbornAgent(Agent):
    """Ignores cancellation: catches it and goes on sleeping, forever."""

    name = "stubborn"

    async def run(self, task: str) -> str:
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                continue


class TrustingAgent(Agent):
    """Turns its own run's check of syscall results off, and reports what it was handed.

    Behind a pool's host, the host has checked every answer before the child sees it, so a
    rogue poller's content reaches the agent in no form, whatever the agent's own code does.
    """

    name = "trusting"

    async def run(self, task: str) -> str:
        from kernos.kernel import result_seal

        result_seal.CHECK_KEY.set(None)
        seen: list[str] = []
        calls = (
            lambda: self.storage.read("plain"),
            lambda: self.memory.add("note"),
            lambda: self.llm.chat([{"role": "user", "content": "hi"}], max_tokens=4),
        )
        for call in calls:
            try:
                seen.append(repr(await call()))
            except Exception as exc:  # noqa: BLE001 - what the agent was handed, reported
                seen.append(f"{type(exc).__name__}: {exc}")
        return json.dumps(seen)


class HogAgent(Agent):
    """Takes memory, 32 MiB at a time, until something stops it."""

    name = "hog"

    async def run(self, task: str) -> str:
        await self.llm.chat([{"role": "user", "content": "start"}], max_tokens=4)
        with workflow.unsafe.sandbox_unrestricted():
            held = []
            while True:
                held.append(b"\x01" * (32 << 20))


class ForkerAgent(Agent):
    """Forks sleeping processes until the system says no: a fork bomb, bounded by the pool."""

    name = "forker"

    async def run(self, task: str) -> str:
        forked = 0
        with workflow.unsafe.sandbox_unrestricted():
            while forked < 100_000:
                try:
                    if os.fork() == 0:
                        time.sleep(3600)  # noqa: ASYNC251 - a forked process, no event loop
                        os._exit(0)
                except OSError as exc:
                    return f"forked {forked}, then {type(exc).__name__}"
                forked += 1
        return f"forked {forked}"


class SpinnerAgent(Agent):
    """Spins in its workflow code and never yields."""

    name = "spinner"

    async def run(self, task: str) -> str:
        await self.llm.chat([{"role": "user", "content": "start"}], max_tokens=4)
        spins = 0
        while True:
            spins += 1


class ReweigherAgent(Agent):
    """Sets its own pool's CPU weight back to a host process's (its session group's nice to
    0), then looks again after a timer: what it wrote, and what its nice was each time."""

    name = "reweigher"

    async def run(self, task: str) -> str:
        with workflow.unsafe.sandbox_unrestricted():
            first = _autogroup_nice()
            try:
                Path("/proc/self/autogroup").write_text("0")
                wrote = "0"
            except OSError as exc:
                wrote = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            after = _autogroup_nice()
        await asyncio.sleep(2)
        with workflow.unsafe.sandbox_unrestricted():
            later = _autogroup_nice()
        return json.dumps({"first": first, "wrote": wrote, "after": after, "later": later})


class RenicerAgent(Agent):
    """Lowers its own threads' nice back to a host process's (0), as code would where the
    kernel weighs each thread by its nice: what its nice was, what lowering it said, and the
    nice of a thread it starts after."""

    name = "renicer"

    async def run(self, task: str) -> str:
        with workflow.unsafe.sandbox_unrestricted():
            first = os.getpriority(os.PRIO_PROCESS, 0)
            try:
                os.setpriority(os.PRIO_PROCESS, 0, 0)
                lowered = "0"
            except OSError as exc:
                lowered = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            seen: list[object] = []

            def look() -> None:
                try:
                    with workflow.unsafe.sandbox_unrestricted():
                        seen.append(os.getpriority(os.PRIO_PROCESS, 0))
                except Exception as exc:  # noqa: BLE001 - said, not raised: the test reads it
                    seen.append(repr(exc))

            thread = threading.Thread(target=look)
            thread.start()
            thread.join()
        return json.dumps({"first": first, "lowered": lowered, "thread": seen})


def _autogroup_nice() -> int:
    return int(Path("/proc/self/autogroup").read_text().split()[-1])


class CrasherAgent(Agent):
    """Ends its own process from its workflow code, at every activation."""

    name = "crasher"

    async def run(self, task: str) -> str:
        with workflow.unsafe.sandbox_unrestricted():
            os._exit(3)


class LoaderAgent(Agent):
    """Tells its pool's host, on the pipe the child answers on, that its process has only now
    loaded what every pool's process loads (a forged `LOADED` frame), hoping the 10 s its
    activation then holds are not counted against it."""

    name = "loader"

    async def run(self, task: str) -> str:
        with workflow.unsafe.sandbox_unrestricted():
            forged = FrameWriter.frame(LOADED, 0, b"")
            for fd in range(3, 256):  # the pipe to the host is a duplicate of the first stdout
                try:
                    if stat.S_ISFIFO(os.fstat(fd).st_mode):
                        os.write(fd, forged)
                except OSError:
                    continue
            time.sleep(10)  # noqa: ASYNC251 - the point: the task is held
        return "not ended"


def _around_the_sdk(agent: Agent) -> SyscallDispatcher:
    """A dispatcher of the agent's own run that keeps no count of its own syscalls."""
    return SyscallDispatcher(agent.llm._dispatcher.run)


class FlooderAgent(Agent):
    """Lists its files N times at once (`honest N`), or as N dispatchers (`around N`), each of
    which knows of one syscall pending: the SDK's own limit never applies. Or (`cancelling N`)
    lists them four at a time, each four through a dispatcher of its own, cancelling them
    before the next: a syscall cancelled so is answered at once, while the kernel may still run
    it (the SDK would keep its turn meanwhile)."""

    name = "flooder"

    async def run(self, task: str) -> str:
        mode, count = task.split()
        if mode == "cancelling":
            for _ in range(int(count) // 4):
                storage = type(self.storage)(_around_the_sdk(self))
                listing = [asyncio.ensure_future(storage.list()) for _ in range(4)]
                for _ in range(50):  # (each to its schedule command, in this activation)
                    await asyncio.sleep(0)
                for each in listing:
                    each.cancel()
                await asyncio.gather(*listing, return_exceptions=True)
            return f"cancelled {count}"
        if mode == "around":
            stores = [type(self.storage)(_around_the_sdk(self)) for _ in range(int(count))]
        else:
            stores = [self.storage] * int(count)
        listed = await asyncio.gather(*(storage.list() for storage in stores))
        return f"listed {len(listed)} times"


class WandererAgent(Agent):
    """Breaks its pool's process, then continues as new, hoping to land on a host that never
    saw it: its first execution ends its process at every activation for 4 s, then continues;
    the next waits `task` seconds on a timer (time for its first host to go) and ends its
    process at every activation after."""

    name = "wanderer"

    async def run(self, task: str) -> str:
        info = workflow.info()
        if info.continued_run_id is None:
            with workflow.unsafe.sandbox_unrestricted():
                # (The wall clock: workflow.now() is each attempt's own start, so it would never
                # move past the window. What the attempts that crash do is never recorded.)
                if time.time() - info.workflow_start_time.timestamp() < 4:
                    os._exit(3)
            workflow.continue_as_new(self.llm._dispatcher.run)
        await workflow.sleep(float(task))
        with workflow.unsafe.sandbox_unrestricted():
            os._exit(3)


class ContinuerAgent(Agent):
    """Lists its files N times without waiting for any, then continues as new, for ever: each
    execution alone stays under the limit, while the syscalls it left keep running."""

    name = "continuer"

    async def run(self, task: str) -> str:
        listing = [asyncio.ensure_future(self.storage.list()) for _ in range(int(task))]
        for _ in range(50):  # (each to its schedule command, in this activation)
            await asyncio.sleep(0)
        assert all(not each.done() for each in listing)
        workflow.continue_as_new(self.llm._dispatcher.run)


class TimerAgent(Agent):
    """Starts N timers it never waits for, then sleeps a moment."""

    name = "timers"

    async def run(self, task: str) -> str:
        sleepers = [asyncio.ensure_future(asyncio.sleep(3600 + n)) for n in range(int(task))]
        await asyncio.sleep(0.5)
        for sleeper in sleepers:
            sleeper.cancel()
        return f"{len(sleepers)} timers started"


class HistorianAgent(Agent):
    """Fills its history: N search-attribute updates at every workflow task, for ever."""

    name = "historian"

    async def run(self, task: str) -> str:
        while True:
            for _ in range(int(task)):
                workflow.upsert_search_attributes([visibility.STATUS.value_set("running")])
            await asyncio.sleep(0.05)


class BloaterAgent(Agent):
    """Writes a file of N bytes, through the SDK (`honest N`) or around its size check."""

    name = "bloater"

    async def run(self, task: str) -> str:
        mode, size = task.split()
        storage = self.storage
        if mode == "around":
            dispatcher = _around_the_sdk(self)
            dispatcher._check_size = lambda *args: None  # type: ignore[method-assign]
            storage = type(self.storage)(dispatcher)
        try:
            await storage.write("big.txt", "x" * int(size))
        except PayloadTooLarge as exc:
            # Refused by the SDK, before the kernel; or by the kernel, its fields carried here.
            return f"refused ({exc.size} bytes, limit {exc.limit}): {exc}"
        return "written"


class HolderAgent(Agent):
    """Holds each workflow task it gets for N seconds (a blocking call in workflow code)."""

    name = "holder"

    async def run(self, task: str) -> str:
        with workflow.unsafe.sandbox_unrestricted():
            time.sleep(float(task))  # noqa: ASYNC251 - the point: the task is held
        return "held"


class LaundererAgent(Agent):
    """Has a human approve an ask that reads like a kernel tool's call (`approval.ask`, which
    any agent may make), then makes that call (`task`: its arguments, JSON), hoping the one
    approval passes the other's `a` rule."""

    name = "launderer"

    async def run(self, task: str) -> str:
        ask = ApprovalAsk(tool="charge", arguments=task, call_id="charge-1")
        await CURRENT.get().call(APPROVAL_ASK, ask, "charge")
        try:
            result = await self.tools.call("charge", json.loads(task))
        except AccessDenied as exc:
            return f"denied: {exc}"
        return result.content


class AskerAgent(Agent):
    """Asks for `task` approvals at once, each of other arguments: a row apiece in every
    approver's list, if the kernel let it."""

    name = "asker"

    async def run(self, task: str) -> str:
        asks = [
            CURRENT.get().call(APPROVAL_ASK, ApprovalAsk(tool="spam", call_id=f"c{n}"), "spam")
            for n in range(int(task))
        ]
        answers = await asyncio.gather(*asks, return_exceptions=True)
        return json.dumps([str(answer) for answer in answers])


class ForgerAgent(Agent):
    """Sends a request built around its own validation (`model_construct`), with a NUL the
    store cannot hold: the kernel worker's decoding refuses it, hoping for a retry loop."""

    name = "forger"

    async def run(self, task: str) -> str:
        forged = ApprovalAsk.model_construct(tool="launch", arguments="{}", call_id="a\x00b")
        try:
            await CURRENT.get().call(APPROVAL_ASK, forged, "launch")
        except AccessDenied as exc:
            return f"denied: {exc}"
        return "went through"
