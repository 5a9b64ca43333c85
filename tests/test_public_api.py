"""The public API: one import, every name in __all__ real and documented."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import typing

import pytest
from temporalio.service import RPCError, RPCStatusCode

import kernos
import kernos.kernel.llm.base
from kernos import RunHandle, RunResult, TokenUsage


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in kernos.__all__:
        value = getattr(kernos, name)
        assert value.__doc__, f"kernos.{name} has no docstring"


def test_errors_share_one_root() -> None:
    errors = [getattr(kernos, n) for n in kernos.__all__ if n.endswith(("Error", "Denied"))]
    assert errors
    for error in errors:
        assert issubclass(error, kernos.KernosError), error


async def test_scripted_backend_counts_and_runs_out() -> None:
    backend = kernos.ScriptedBackend(["one", lambda request: request.messages[-1].content[::-1]])
    request = kernos.LLMRequest(model="m", messages=[kernos.Message(role="user", content="abc")])
    seen: list[kernos.kernel.llm.base.Snapshot] = []
    assert (await backend.chat(request, seen.append)).text == "one"
    assert (await backend.chat(request, seen.append)).text == "cba"
    assert backend.calls == 2
    assert [snapshot.text for snapshot in seen] == ["one", "cba"]
    try:
        await backend.chat(request, seen.append)
    except kernos.LLMBadRequest as exc:
        assert "the script has 2 replies and call 3 asked for more" in str(exc)
    else:
        raise AssertionError("a third call should exhaust the script")


async def test_waiting_for_a_result_backs_off_when_the_server_is_at_its_poll_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of clients waiting at once hit the server's long-poll limit: wait again."""
    answers: list[object] = [
        RPCError(
            "namespace concurrent poller limit exceeded", RPCStatusCode.RESOURCE_EXHAUSTED, b""
        ),
        RPCError("operation was canceled", RPCStatusCode.CANCELLED, b""),
        RunResult(run_id="run-1", output="done", usage=TokenUsage(), syscalls=1),
    ]

    async def wait(self: RunHandle) -> RunResult:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, RunResult)
        return answer

    monkeypatch.setattr(RunHandle, "_wait", wait)
    handle = RunHandle(None, "run-1")  # type: ignore[arg-type]
    assert (await handle.result()).output == "done"
    assert answers == []

    answers.append(RPCError("nope", RPCStatusCode.PERMISSION_DENIED, b""))
    with pytest.raises(RPCError):
        await handle.result()


def test_a_name_first_used_in_a_workflow_sandbox_is_the_kernels_own() -> None:
    # The package root imports a name when first used. In a run's sandbox that import must go
    # through the sandbox's hook, which passes kernos through, or agent code would get a copy
    # of the module made inside the sandbox (classes that are not the kernel's). In a fresh
    # interpreter, where nothing has imported `kernos.remote` yet.
    script = """
import sys
import inspect
import re
import typing

import kernos
from temporalio.worker.workflow_sandbox._importer import Importer
from temporalio.worker.workflow_sandbox._restrictions import (
    RestrictionContext, SandboxRestrictions,
)
from kernos.workflows.agent_worker import PASSTHROUGH
assert "kernos.remote" not in sys.modules
restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
scope = {}
with Importer(restrictions, RestrictionContext()).applied():
    exec("from kernos import RemoteClient", scope)
import kernos.remote
print(scope["RemoteClient"] is kernos.remote.RemoteClient)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


def test_every_kernel_type_the_sdk_takes_or_returns_is_exported() -> None:
    """A caller of `Agent`'s managers or of `KernosClient` never imports from kernos.kernel."""
    import kernos.agent
    import kernos.client
    from kernos.kernel import syscalls

    abi = {
        name
        for name, value in vars(syscalls).items()
        if inspect.isclass(value) and value.__module__.startswith(f"{syscalls.__name__}.")
    }
    touched: set[str] = set()
    for module in (kernos.agent, kernos.client):
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == module.__name__):
                continue
            for name, method in vars(cls).items():
                if name.startswith("_") or not inspect.isfunction(method):
                    continue
                for hint in typing.get_type_hints(method).values():
                    touched |= {n for n in abi if re.search(rf"\b{n}\b", repr(hint))}
    assert touched, "no method of the SDK names a kernel type"
    assert touched <= set(kernos.__all__), sorted(touched - set(kernos.__all__))
