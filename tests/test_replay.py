"""Committed histories replay against today's workflow code."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from kernos.kernel.config import CHAT_AGENT, CHAT_AGENT_PATH
from kernos.kernel.result_seal import BY_HOST, SealCheckInterceptor
from kernos.workflows import agent_registry
from kernos.workflows.agent_run import AgentRun
from kernos.workflows.agent_worker import sandbox_runner
from tests import workflow_sources
from tests.agents import AGENTS, GRAPH_AGENTS, SDK_AGENTS, TYPED_AGENTS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories() -> None:
    assert HISTORIES, "tests/histories/ holds no recorded history"


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_history_replays(path: Path) -> None:
    own = {CHAT_AGENT: CHAT_AGENT_PATH}  # kernos's own, registered wherever kernos runs
    agent_registry.register({**AGENTS, **SDK_AGENTS, **GRAPH_AGENTS, **TYPED_AGENTS, **own})
    replayer = Replayer(
        workflows=[AgentRun],
        workflow_runner=sandbox_runner(),
        data_converter=pydantic_data_converter,
        # As in a pool's child: results were checked when they came (their seals are under a
        # test run's key), and a run that checks them replays its `kernos-sealed-results` marker.
        interceptors=[SealCheckInterceptor(BY_HOST)],
    )
    result = await replayer.replay_workflow(
        WorkflowHistory.from_json(path.stem, path.read_text()), raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure


def test_the_code_runs_replay_is_the_code_their_histories_were_checked_with() -> None:
    stale = workflow_sources.changed()
    assert not stale, (
        f"workflow code changed since its histories were last checked: {', '.join(stale)}. "
        "Runs in flight replay their whole history with the new code when they next wake: "
        "record a history of what changed (python -m tests.record_history NAME AGENT TASK), "
        "put a change to what a run does behind workflow.patched(...) with a history of both "
        "branches, then take the new fingerprints: python -m tests.workflow_sources"
    )
