"""Attack 2, Temporal: agent code reaches no Temporal but its own run's commands, each checked.

Unconfined, a run that escapes the sandbox finds the worker's Temporal client and connects to
the server; confined, neither. What it asks through its workflow goes through the pool's host,
which ends the run, with the reason, at the first command kernos's dispatcher would not have
made; another tenant's run, which it aimed at, completes with its own output.
"""

from __future__ import annotations

import uuid

import pytest

from kernos import KernosClient, RunFailed, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from tests.conftest import workers
from tests.hostile import Mode, hostile_settings, keep_secret, probe, until_recorded
from tests.waiting import until_timer


@pytest.mark.parametrize("mode", ["bwrap", "in_process"])
async def test_agent_code_reaches_temporal_only_unconfined(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: Mode
) -> None:
    settings = hostile_settings(temporal, postgres, mode)
    async with workers(settings), await KernosClient.connect(settings) as client:
        found = await probe(client, f"evil-{uuid.uuid4().hex[:6]}", addresses=[temporal.address])
    if mode == "in_process":
        assert found["connect"] == {temporal.address: "connected"}
        assert found["clients"] >= 1
    else:
        assert found["connect"][temporal.address] != "connected"
        assert found["clients"] == 0


async def test_each_command_a_run_may_not_make_ends_it(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = hostile_settings(temporal, postgres, "bwrap")
    victim, evil = f"victim-{uuid.uuid4().hex[:6]}", f"evil-{uuid.uuid4().hex[:6]}"
    async with workers(settings), await KernosClient.connect(settings) as client:
        kept = await keep_secret(client, victim, "the-victims-secret", seconds=20)
        cases = {
            "child": "start_child_workflow_execution: agent runs may not do this",
            f"signal {kept.run_id}": "signal_external_workflow_execution",
            f"cancel {kept.run_id}": "request_cancel_external_workflow_execution",
            "activity": "activity 'shell.exec' is not a syscall",
            f"queue {settings.temporal.agent_task_queue}": "syscall storage.read on task queue",
            "priority": "syscall storage.read at a priority or fairness other than the run's",
            f"tenant-attribute {victim}": "setting search attribute 'KernosTenant'",
            f"continue-as-other {victim}": "an input other than the one the kernel admitted",
            f"memo {victim}": "modify_workflow_properties",
            "finish faked": "syscall run.finish: the kernel learns how this run ends from Temporal",
            # (Last: it patches the workflow's class in its pool's process.)
            "terminated alice": "failing the run with a failure of kind terminated_failure_info",
        }
        refused: dict[str, str] = {}
        for task, reason in cases.items():
            handle = await client.submit(RunSpec(agent="commander", task=task, tenant=evil))
            refused[handle.run_id] = reason
            with pytest.raises(RunFailed) as failed:
                await handle.result()
            assert failed.value.error_type == "CommandRefused", task
            assert reason in failed.value.message, (task, failed.value.message)
            # The kernel's record and the Temporal UI say why.
            history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
            ended = history.events[-1].workflow_execution_failed_event_attributes
            assert reason in ended.failure.message, task
        # The victim's run went on untouched, and returns its own output.
        assert (await kept.result()).output == "the-victims-secret"
        # The kernel learned each end from Temporal (the runs never said), and audited it.
        for run_id, reason in refused.items():
            view = await until_recorded(client, run_id)
            assert view.record.status == "failed"
            assert (view.record.error or "").startswith("CommandRefused: kernos refused")
            assert reason in (view.record.error or "")
            [end] = [call for call in view.syscalls if call.syscall == "run.end"]
            assert reason in (end.reason or "")


async def test_a_run_that_ignores_its_cancellation_is_terminated(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = hostile_settings(temporal, postgres, "bwrap")
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(
            RunSpec(agent="stubborn", task="stay", tenant=f"evil-{uuid.uuid4().hex[:6]}")
        )
        # In its loop, so that it is its code that ignores the cancellation (one sent before
        # its first task would end the run before that code could catch it).
        await until_timer(client.temporal, handle.run_id)
        assert await handle.cancel(terminate_after_s=2) is True
        view = await until_recorded(client, handle.run_id)
    assert view.record.status == "cancelled"
    assert view.record.error == "terminated: it did not stop within 2 s of being cancelled"
