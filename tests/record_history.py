"""Record a new replay history: `python -m tests.record_history NAME AGENT TASK`.

Histories under tests/histories/ are replayed on every test run, so a change to workflow code
that would break running workflows fails the suite. Add a history for new behaviour; never
re-record an existing one to make a test pass. This records a run of one agent on the default
settings; a run a test takes through a feature (an approval, continue-as-new, a sliced
generation) is recorded by that test with `pytest --record-histories` (`keep_history`). Then
take the new fingerprints: `python -m tests.workflow_sources`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from kernos import KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.db import upgrade
from tests.conftest import make_settings, workers

HISTORIES = Path(__file__).parent / "histories"


async def record(name: str, agent: str, task: str) -> Path:
    postgres = EmbeddedPostgres.start(Path(tempfile.mkdtemp()) / "data")
    temporal = await TemporalDevServer.start(headless=True)
    try:
        await upgrade(postgres.dsn(role="owner"))
        settings = make_settings(temporal, postgres)
        async with workers(settings), await KernosClient.connect(settings) as client:
            handle = await client.submit(RunSpec(agent=agent, task=task))
            await handle.result()
            history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
        path = HISTORIES / f"{name}.json"
        path.write_text(history.to_json())
        return path
    finally:
        temporal.stop()
        postgres.stop(delete=True)


if __name__ == "__main__":
    print(asyncio.run(record(*sys.argv[1:4])))
