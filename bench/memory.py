"""The memory manager at 100,000 items: insert rate, scoped search latency, recall of HNSW.

Real text: docstrings of the standard library and the installed packages, read with `ast` (no
imports), their first four paragraphs each, deduplicated. Embedded by the default model
(all-MiniLM-L6-v2 on the CPU; cached under ~/.cache/kernos so a rerun skips it), spread over
100 tenant/agent scopes. Measured on an embedded PostgreSQL of its own:

- insert rate through `MemoryStore.add` (the syscall's transaction: quota lock, insert with the
  HNSW index in place, eviction check), on a sample; the rest is bulk-loaded and the index
  rebuilt with `maintenance_work_mem` large enough to build it in memory;
- scoped search latency (`MemoryStore.search`, k = 10, the query already embedded) and the
  embedding of a query on its own;
- recall@10 of the search against an exact scan of the same scope: the store's search (a
  scope of 1,000 items is under `[memory] exact_below`, so it is ranked exactly) and the HNSW
  scan forced, as larger scopes get it.

    python bench/memory.py [--items 100000] [--queries 300] [--sample 5000]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import random
import statistics
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from bench_results import percentile, run_benchmark, write_results

from kernos.infra.postgres import EmbeddedPostgres
from kernos.kernel.config import DatabaseSettings, MemorySettings
from kernos.kernel.db import upgrade
from kernos.kernel.db.pool import Pool, open_pool
from kernos.kernel.embeddings import LocalEmbedder
from kernos.kernel.memory_store import MemoryStore, nearest, vector_literal

SCOPES = [(f"t{t}", f"a{a}") for t in range(10) for a in range(10)]
CACHE = Path.home() / ".cache" / "kernos"


def docstrings(limit: int) -> list[str]:
    """Paragraphs of docstrings under the stdlib and site-packages, unique, in order."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    seen: set[str] = set()
    texts: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if not isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for paragraph in doc.split("\n\n")[:4]:
                    text = " ".join(paragraph.split())[:600]
                    if len(text) >= 40 and text not in seen:
                        seen.add(text)
                        texts.append(text)
                        if len(texts) >= limit:
                            return texts
    return texts


async def embeddings(texts: list[str]) -> np.ndarray:
    """The texts' embeddings, from the cache when the same texts were embedded before."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"bench-memory-{len(texts)}-{digest}.npy"
    if path.exists():
        print(f"embeddings from {path}")
        loaded: np.ndarray = np.load(path)
        return loaded
    embedder = LocalEmbedder(batch_size=128)
    started = time.monotonic()
    vectors: list[list[float]] = []
    for start in range(0, len(texts), 2048):
        vectors.extend(await embedder.embed(texts[start : start + 2048]))
        print(f"  embedded {len(vectors)}/{len(texts)}", end="\r", flush=True)
    seconds = time.monotonic() - started
    print(f"\nembedded {len(texts)} texts in {seconds:.0f} s ({len(texts) / seconds:.0f}/s)")
    array = np.asarray(vectors, dtype=np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return array


async def insert_through_store(
    store: MemoryStore, texts: list[str], vectors: np.ndarray, concurrency: int
) -> float:
    """Items per second through the syscall's transaction, `concurrency` at once."""
    queue = list(range(len(texts)))

    async def adder() -> None:
        while queue:
            n = queue.pop()
            tenant, agent = SCOPES[n % len(SCOPES)]
            await store.add(
                tenant=tenant, scope=f"agent/{agent}", owner=agent, content=texts[n],
                metadata={"n": n}, embedding=vectors[n].tolist(), written_by=f"bench-{n}",
            )  # fmt: skip

    started = time.monotonic()
    await asyncio.gather(*(adder() for _ in range(concurrency)))
    return len(texts) / (time.monotonic() - started)


async def bulk_load(pool: Pool, texts: list[str], vectors: np.ndarray, first: int) -> float:
    """COPY the rest without the HNSW index, then build it in memory; the build's seconds."""
    async with pool.connection() as conn:
        await conn.execute("DROP INDEX memories_embedding")
        async with conn.cursor().copy(
            "COPY memories (id, tenant, scope, owner, content, metadata, embedding, written_by)"
            " FROM STDIN"
        ) as copy:
            for n in range(first, len(texts)):
                tenant, agent = SCOPES[n % len(SCOPES)]
                await copy.write_row(
                    (uuid.uuid4(), tenant, f"agent/{agent}", agent, texts[n], f'{{"n": {n}}}',
                     vector_literal(vectors[n].tolist()), f"bench-{n}")
                )  # fmt: skip
        await conn.execute(
            "INSERT INTO memory_use (id, tenant, owner) SELECT id, tenant, owner FROM memories"
            " ON CONFLICT DO NOTHING"
        )
        await conn.execute("SET maintenance_work_mem = '2GB'")
        started = time.monotonic()
        await conn.execute(
            "CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops)"
        )
        seconds = time.monotonic() - started
        await conn.execute("ANALYZE memories")
    return seconds


async def exact(pool: Pool, tenant: str, scope: str, query: list[float], k: int) -> list[str]:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        cursor = await conn.execute(
            "SELECT id FROM memories WHERE tenant = %s AND scope = %s"
            " ORDER BY embedding <=> %s::vector LIMIT %s",
            (tenant, scope, vector_literal(query), k),
        )
        return [str(row["id"]) for row in await cursor.fetchall()]


async def forced_hnsw(
    pool: Pool, settings: MemorySettings, tenant: str, scope: str, query: list[float], k: int
) -> tuple[list[str], float]:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_sort = off")  # the ordered HNSW scan, not a sort
        started = time.perf_counter()
        rows = await nearest(
            conn, tenant=tenant, scope=scope, embedding=query, k=k, filter={}, min_score=None,
            ef_search=settings.ef_search,
        )  # fmt: skip
        return [str(row["id"]) for row in rows], time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--sample", type=int, default=5_000)
    args = parser.parse_args()

    corpus = docstrings(args.items + args.queries)
    if len(corpus) < args.items + args.queries:
        sys.exit(f"only {len(corpus)} docstrings found; ask for fewer --items")
    rng = random.Random(1)
    rng.shuffle(corpus)
    texts, queries = corpus[: args.items], corpus[args.items :]
    vectors = await embeddings(corpus)
    # A few docstrings hold NUL, which PostgreSQL text cannot (the syscall refuses it by name);
    # shown as U+FFFD here, after embedding, so the cached embeddings still match the corpus.
    texts = [text.replace("\x00", "\ufffd") for text in texts]
    item_vectors, query_vectors = vectors[: args.items], vectors[args.items :]
    embedder = LocalEmbedder()
    embed_ms = []
    for text in queries[:50]:
        started = time.perf_counter()
        await embedder.embed([text])
        embed_ms.append((time.perf_counter() - started) * 1000)

    settings = MemorySettings(max_items_per_agent=10 * args.items)
    postgres = EmbeddedPostgres.start(Path(tempfile.mkdtemp()) / "data")
    try:
        await upgrade(postgres.dsn(role="owner"))
        pool = await open_pool(DatabaseSettings(dsn=postgres.dsn(), pool_max=16))
        store = MemoryStore(pool, settings)
        sample = min(args.sample, args.items)
        insert_rate = await insert_through_store(store, texts[:sample], item_vectors, 8)
        print(f"insert through the store: {insert_rate:.0f} items/s ({sample} items, 8 at once)")
        build_s = await bulk_load(pool, texts, item_vectors, sample)
        print(f"HNSW index over {args.items} items built in {build_s:.1f} s")

        search_ms: list[float] = []
        forced_ms: list[float] = []
        recall: list[float] = []
        forced_recall: list[float] = []
        for n, query in enumerate(query_vectors.tolist()):
            tenant, agent = SCOPES[n % len(SCOPES)]
            scope = f"agent/{agent}"
            started = time.perf_counter()
            found = await store.search(
                tenant=tenant, scope=scope, embedding=query, k=10, filter={}, min_score=None
            )
            search_ms.append((time.perf_counter() - started) * 1000)
            truth = set(await exact(pool, tenant, scope, query, 10))
            recall.append(len(truth & {item.id for item in found}) / len(truth))
            ids, seconds = await forced_hnsw(pool, settings, tenant, scope, query, 10)
            forced_ms.append(seconds * 1000)
            forced_recall.append(len(truth & set(ids)) / len(truth))
        await pool.close()
    finally:
        postgres.stop(delete=True)

    result: dict[str, Any] = {
        "items": args.items,
        "scopes": len(SCOPES),
        "queries": len(query_vectors),
        "insert_per_s": round(insert_rate, 1),
        "index_build_s": round(build_s, 1),
        "search_p50_ms": round(statistics.median(search_ms), 2),
        "search_p99_ms": round(percentile(search_ms, 0.99), 2),
        "recall_at_10": round(statistics.mean(recall), 4),
        "search_path": "exact" if len(texts) / len(SCOPES) < settings.exact_below else "hnsw",
        "hnsw_forced_p50_ms": round(statistics.median(forced_ms), 2),
        "hnsw_forced_p99_ms": round(percentile(forced_ms, 0.99), 2),
        "hnsw_forced_recall_at_10": round(statistics.mean(forced_recall), 4),
        "query_embedding_p50_ms": round(statistics.median(embed_ms), 2),
        "ef_search": settings.ef_search,
        "goal": {"recall_at_10": 0.95, "search_p99_ms": 20},
    }
    print()
    print(f"{'figure':<34}{'value':>12}")
    for key, value in result.items():
        if key != "goal":
            print(f"{key:<34}{value!s:>12}")
    write_results("memory", result)


if __name__ == "__main__":
    run_benchmark(main)
