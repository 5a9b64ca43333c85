"""The memory manager: syscalls through real runs, PostgreSQL with pgvector, real embeddings."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from kernos import KernosClient, RunSpec, Settings
from kernos.infra.daemons import stop
from kernos.infra.llama import MODEL_ALIAS, LlamaServer, local_model
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import MemorySettings
from kernos.kernel.embeddings import DIMENSIONS, LocalEmbedder, OpenAIEmbedder, checked
from kernos.kernel.errors import EmbeddingMismatch
from kernos.kernel.memory_store import NEAREST, MemoryStore, nearest, vector_literal
from kernos.kernel.syscalls import MemoryAdd, MemoryGet, MemorySearch
from tests.conftest import MODELS, make_settings, workers

#: One embedder for the session: the model loads once per process.
EMBEDDER = LocalEmbedder()


class CountingEmbedder:
    """Real embeddings, with a count of the texts embedded (to see retries and batches)."""

    def __init__(self) -> None:
        self.model = EMBEDDER.model
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.extend(texts)
        return await EMBEDDER.embed(texts)

    async def aclose(self) -> None:
        pass


async def run_memo(
    settings: Settings, steps: list[dict[str, Any]], *, agent: str = "memo", tenant: str = "acme"
) -> list[Any]:
    async with await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent=agent, task=json.dumps(steps), tenant=tenant))
        result = await handle.result()
    return list(json.loads(result.output))


def policy_file(tmp_path: Path, *rules: str) -> dict[str, str]:
    path = tmp_path / "policy.csv"
    default = [
        "p, *, *, *, llm:*, llm.*, allow",
        "p, *, *, *, memory:own, memory.*, allow",
    ]
    path.write_text("\n".join([*default, *rules]) + "\n")
    return {"policy_path": str(path)}


def test_requests_name_their_resource_and_refuse_writes_elsewhere() -> None:
    assert MemorySearch(query="q").resource() == "memory:own"
    assert MemorySearch(query="q", scope="team").resource() == "memory:shared/team"
    assert MemoryGet(id="x", agent="other").resource() == "memory:agent/other"
    with pytest.raises(ValidationError, match="cannot write agent 'other'"):
        MemoryAdd.model_validate({"content": "x", "agent": "other"})
    with pytest.raises(ValidationError, match="not both"):
        MemorySearch(query="q", scope="team", agent="other")
    with pytest.raises(ValidationError, match="not a valid name"):
        MemorySearch(query="q", scope="../etc")
    with pytest.raises(ValidationError, match="at most 32"):
        MemoryAdd(content="x", metadata={f"k{i}": i for i in range(33)})


def test_a_model_of_another_dimension_is_refused_naming_both() -> None:
    with pytest.raises(EmbeddingMismatch, match=r"gives 768-dimensional .* holds 384-dimensional"):
        checked("big-model", [[0.0] * 768], 1)


async def test_memory_syscalls_find_by_meaning_and_keep_scopes_apart(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    embedder = CountingEmbedder()
    facts = [
        "Paris is the capital of France.",
        "The quarterly revenue grew by twelve percent.",
        "Cats often sleep for most of the day.",
    ]
    async with workers(settings, embedder=embedder):
        tenant = f"t{uuid.uuid4().hex[:8]}"
        steps: list[dict[str, Any]] = [
            *({"op": "add", "content": fact, "metadata": {"n": n}} for n, fact in enumerate(facts)),
            {"op": "search", "query": "Which city is the French capital?", "k": 2},
            {"op": "search", "query": "sleepy animals", "k": 3, "filter": {"n": 1}},
            {"op": "search", "query": "sleepy animals", "k": 3, "min_score": 0.3},
            {"op": "update", "id": "$1", "content": "Revenue fell by three percent."},
            {"op": "search", "query": "Did revenue go down?", "k": 1},
            {"op": "get", "id": "$0"},
            {"op": "delete", "id": "$0"},
            {"op": "get", "id": "$0"},
            {"op": "list", "limit": 10},
            {"op": "get", "id": "not-a-uuid"},
        ]
        results = await run_memo(settings, steps, tenant=tenant)
        # The same agent in another tenant sees none of it.
        elsewhere = await run_memo(
            settings, [{"op": "search", "query": "capital of France"}], tenant=f"{tenant}x"
        )
    added = results[:3]
    assert [item["scope"] for item in added] == ["agent/memo"] * 3
    capital, filtered, relevant, updated, revenue, got, deleted, gone, listed, bad = results[3:]
    assert capital[0]["content"] == facts[0] and capital[0]["score"] > capital[1]["score"]
    assert [item["content"] for item in filtered] == [facts[1]]  # metadata filter
    assert [item["content"] for item in relevant] == [facts[2]]  # score threshold
    assert updated["content"] == "Revenue fell by three percent."
    assert revenue[0]["id"] == added[1]["id"]  # found by its new content: embedded again
    assert got["id"] == added[0]["id"]
    assert deleted is True
    assert gone["error"] == "NotFound" and added[0]["id"] in gone["message"]
    assert [item["id"] for item in listed] == [added[2]["id"], added[1]["id"]]  # newest first
    assert bad["error"] == "NotFound"
    assert elsewhere == [[]]
    # One embedding per add, search and content update; none for get, list or delete.
    assert len(embedder.texts) == 3 + 3 + 1 + 1 + 1


async def test_other_agents_and_shared_scopes_open_only_by_policy(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    policy = policy_file(
        tmp_path,
        f"p, *, other-memo, {tenant}, memory:agent/memo, memory.search, allow",
        f"p, *, memo, {tenant}, memory:shared/team, memory.*, allow",
    )
    settings = make_settings(temporal, postgres, policy=policy)
    async with workers(settings, embedder=CountingEmbedder()):
        mine = await run_memo(
            settings,
            [
                {"op": "add", "content": "The launch is on Tuesday."},
                {"op": "add", "content": "The team meets at noon.", "scope": "team"},
                {"op": "add", "content": "Elsewhere.", "scope": "secret"},
                {"op": "search", "query": "when is the launch", "agent": "memo"},
            ],
            tenant=tenant,
        )
        theirs = await run_memo(
            settings,
            [
                {"op": "search", "query": "when is the launch", "agent": "memo"},
                {"op": "get", "id": "00000000-0000-0000-0000-000000000000", "agent": "memo"},
                {"op": "search", "query": "meeting", "scope": "team"},
                {"op": "search", "query": "when is the launch"},
            ],
            agent="other-memo",
            tenant=tenant,
        )
    launch, team, secret, own_by_name = mine
    assert team["scope"] == "shared/team"
    assert secret["error"] == "AccessDenied" and "memory:shared/secret" in secret["message"]
    assert own_by_name[0]["id"] == launch["id"]  # naming itself is its own memory
    read, get, shared, own = theirs
    assert [item["id"] for item in read] == [launch["id"]]  # the policy opens search...
    assert get["error"] == "AccessDenied"  # ...and nothing else
    assert shared["error"] == "AccessDenied"
    assert own == []  # its own memory is its own


async def test_quota_evicts_the_least_recently_used_in_the_same_transaction(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres, memory={"max_items_per_agent": 3})
    async with workers(settings, embedder=CountingEmbedder()):
        results = await run_memo(
            settings,
            [
                {"op": "add", "content": "first"},
                {"op": "add", "content": "second"},
                {"op": "add", "content": "third"},
                {"op": "get", "id": "$0"},  # the first is now more recently used than the second
                {"op": "add", "content": "fourth"},
                {"op": "list"},
                {"op": "add", "content": "x" * 40_000},
            ],
            tenant=f"t{uuid.uuid4().hex[:8]}",
        )
    first, second, third, _, fourth, listed, oversized = results
    assert fourth["evicted"] == [second["id"]]
    assert {item["id"] for item in listed} == {first["id"], third["id"], fourth["id"]}
    assert oversized["error"] == "PayloadTooLarge" and "max_content_bytes" in oversized["message"]


async def test_a_retried_add_stores_one_item(kernos_client: KernosClient) -> None:
    store = MemoryStore(kernos_client.pool, MemorySettings())
    tenant = f"t{uuid.uuid4().hex[:8]}"
    vector = [1.0] + [0.0] * (DIMENSIONS - 1)
    item: dict[str, Any] = {
        "tenant": tenant, "scope": "agent/a", "owner": "a", "content": "once", "metadata": {},
        "embedding": vector, "written_by": f"wf/run/1-{tenant}",
    }  # fmt: skip
    first, _ = await store.add(**item)
    again, _ = await store.add(**item)
    assert again.id == first.id
    assert len(await store.page(tenant=tenant, scope="agent/a", filter={}, limit=10)) == 1


def _unit(rng: random.Random) -> list[float]:
    vector = [rng.gauss(0.0, 1.0) for _ in range(DIMENSIONS)]
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector]


async def test_a_scoped_search_in_a_large_table_returns_k_rows(
    kernos_client: KernosClient,
) -> None:
    """150 rows in each of 40 scopes: an HNSW scan stopping at ef_search candidates finds
    about ef_search / 40 rows of one scope; the iterative scan finds k."""
    rng = random.Random(7)
    tenant = f"big{uuid.uuid4().hex[:8]}"
    scopes = [f"agent/a{i}" for i in range(40)]
    async with kernos_client.pool.connection() as conn:
        async with conn.cursor().copy(
            "COPY memories (id, tenant, scope, owner, content, embedding, written_by) FROM STDIN"
        ) as copy:
            for n in range(150 * len(scopes)):
                scope = scopes[n % len(scopes)]
                await copy.write_row(
                    (uuid.uuid4(), tenant, scope, scope[6:], f"item {n}",
                     vector_literal(_unit(rng)), f"bulk-{tenant}-{n}")
                )  # fmt: skip
        await conn.execute("ANALYZE memories")
    query = _unit(rng)
    search: dict[str, Any] = {
        "tenant": tenant, "scope": scopes[0], "embedding": query, "k": 30, "filter": {},
        "min_score": None, "ef_search": 40,
    }  # fmt: skip
    found: dict[bool, list[dict[str, Any]]] = {}
    async with kernos_client.pool.connection() as conn:
        for iterative in (True, False):
            async with conn.transaction():
                # A table this small gets the exact plan (the scope's index, then a sort);
                # at production sizes the planner takes the HNSW scan, forced here.
                await conn.execute("SET LOCAL enable_sort = off")
                found[iterative] = await nearest(conn, **search, iterative=iterative)
                await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                cursor = await conn.execute(
                    "EXPLAIN " + NEAREST,
                    {**search, "query": vector_literal(query), "filter": "{}", "min_score": -2},
                )
                plan = " ".join(str(row["QUERY PLAN"]) for row in await cursor.fetchall())
                assert "memories_embedding" in plan, plan
    async with kernos_client.pool.connection() as conn, conn.transaction():
        exact = await nearest(conn, **search, exact_below=1000)  # a scope of 150 items
    assert len(exact) == 30
    assert [float(row["distance"]) for row in exact] == sorted(
        float(row["distance"]) for row in exact
    )
    # The HNSW scan with the iterative scan found nearly the same rows as the exact ranking.
    assert len({row["id"] for row in exact} & {row["id"] for row in found[True]}) >= 27
    assert len(found[True]) == 30
    assert all(row["scope"] == scopes[0] for row in found[True])
    distances = [float(row["distance"]) for row in found[True]]
    assert distances == sorted(distances)
    # The control: without the iterative scan the same query comes back short.
    assert len(found[False]) < 30, len(found[False])


async def test_past_conversations_are_searchable_by_their_agent_only(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    embedder = CountingEmbedder()
    tenant = f"t{uuid.uuid4().hex[:8]}"
    search = {"op": "search", "scope": "conversations", "query": "the bridge toll", "k": 2}
    async with workers(settings, embedder=embedder):
        await run_memo(
            settings,
            [
                {"op": "say", "text": "The bridge toll went up to four euros."},
                {"op": "say", "text": "My favourite colour is green."},
            ],
            tenant=tenant,
        )
        later = await run_memo(
            settings,
            [
                search,
                {
                    "op": "search",
                    "scope": "conversations",
                    "query": "colour",
                    "filter": {"role": "user"},
                    "k": 1,
                },
                {"op": "list", "scope": "conversations"},
                {"op": "add", "scope": "conversations", "content": "forged"},
            ],
            tenant=tenant,
        )
        embedded = len(embedder.texts)
        again = await run_memo(settings, [search], tenant=tenant)
        other = await run_memo(settings, [search], agent="other-memo", tenant=tenant)
    toll, colour, listed, forged = later
    assert toll[0]["content"] == "The bridge toll went up to four euros."
    assert toll[0]["scope"] == "conversations" and toll[0]["metadata"]["role"] == "user"
    assert [item["content"] for item in colour] == ["My favourite colour is green."]
    assert listed["error"] == "AccessDenied"  # the default policy opens them to search only
    assert forged["error"] == "InvalidRequest" and "only searched" in forged["message"]
    # Two user turns and two replies, embedded once, at the first search; then the queries.
    assert embedded == 4 + 2
    assert len(embedder.texts) == embedded + 1 + 1
    assert [item["id"] for item in again[0]] == [item["id"] for item in toll]
    assert other == [[]]


def embeddings_server(seen: list[dict[str, Any]], dimensions: int) -> httpx.MockTransport:
    """An OpenAI-compatible `/v1/embeddings` that answers in reverse order, unnormalised."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        data = [
            {"index": i, "embedding": [float(len(text))] + [1.0] * (dimensions - 1)}
            for i, text in enumerate(body["input"])
        ]
        return httpx.Response(200, json={"data": list(reversed(data))})

    return httpx.MockTransport(handle)


async def test_an_openai_embeddings_server_is_asked_in_batches() -> None:
    seen: list[dict[str, Any]] = []
    embedder = OpenAIEmbedder(
        "e5", "http://embed.test", batch_size=2, transport=embeddings_server(seen, DIMENSIONS)
    )
    vectors = await embedder.embed(["a", "bbb", "cc"])
    await embedder.aclose()
    assert [body["input"] for body in seen] == [["a", "bbb"], ["cc"]]
    assert all(body["model"] == "e5" for body in seen)
    norms = [sum(x * x for x in vector) for vector in vectors]
    assert norms == pytest.approx([1.0, 1.0, 1.0])  # normalised here
    assert vectors[1][0] > vectors[2][0] > vectors[0][0]  # in the order asked, not answered


@pytest.mark.servers  # (starts its own)
async def test_a_real_embeddings_server_of_another_dimension_is_refused(tmp_path: Path) -> None:
    """llama-server's embeddings of Gemma 3 270M have 640 dimensions; the store holds 384."""
    server = await LlamaServer.start(
        local_model(MODELS), port=free_port(), slots=1, context=512,
        log_file=tmp_path / "embeddings.log", embeddings=True,
    )  # fmt: skip
    embedder = OpenAIEmbedder(MODEL_ALIAS, server.base_url)
    try:
        with pytest.raises(EmbeddingMismatch) as mismatch:
            await embedder.embed(["a real sentence to embed"])
    finally:
        await embedder.aclose()
        stop(server.pid)
    assert (mismatch.value.dimensions, mismatch.value.expected) == (640, 384)
    assert f"{MODEL_ALIAS!r} gives 640-dimensional vectors" in str(mismatch.value)
