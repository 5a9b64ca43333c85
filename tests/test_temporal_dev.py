"""The embedded Temporal dev server as kernos starts it (`infra/temporal_dev.py`)."""

from __future__ import annotations

import uuid

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from kernos.infra.ports import free_port
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel import visibility


async def _metadata_reads(server: TemporalDevServer) -> float:
    """The server's reads of the cluster's and namespaces' metadata from its store, so far."""
    return sum(
        count
        for name, count in (await server.counters()).items()
        if name.startswith("persistence_requests ")
        and name.endswith((" GetCurrentClusterMetadata", " GetNamespace"))
    )


async def test_runs_with_kernos_search_attributes_do_not_read_the_servers_metadata_each_time() -> (
    None
):
    """The dev server reads search attributes from its store on every use unless told not
    to (a testing aid); kernos turns its cache on, which is safe only because its attributes
    exist from the server's start: a run admitted at once must be accepted and listable."""
    server = await TemporalDevServer.start(headless=True, metrics_port=free_port())
    try:
        client = await Client.connect(server.address)
        tenant = f"t-{uuid.uuid4().hex[:8]}"

        async def admit() -> None:
            await client.start_workflow(
                "AgentRun",
                id=f"run-{uuid.uuid4().hex}",
                task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(visibility.AGENT, "a"),
                        SearchAttributePair(visibility.TENANT, tenant),
                        SearchAttributePair(visibility.STATUS, "running"),
                    ]
                ),
            )

        await admit()  # the first, as soon as the server answers
        before = await _metadata_reads(server)
        for _ in range(5):
            await admit()
        listed = [run.id async for run in client.list_workflows(f"KernosTenant = '{tenant}'")]
        reads = await _metadata_reads(server) - before
        # Without the cache: about three reads for each start and more for the list.
        assert reads == 0, f"{reads} metadata reads from the store for five starts and a list"
        assert listed, "runs started with kernos's search attributes are not listed by them"
    finally:
        server.stop()
