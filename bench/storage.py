"""The storage manager's rates: writes, reads and rollbacks per second, through its store.

Each operation is the syscall's own transaction (`StorageStore`): a write takes the namespace's
lock, checks its size, stores the content once by SHA-256 and adds a version; a rollback adds a
version pointing at an earlier content; a read joins the file's head to its content. Files of
about 2 KB of real text (module sources of the standard library), in 100 namespaces, 8
operations at once, on an embedded PostgreSQL of its own.

    python bench/storage.py [--files 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench_results import run_benchmark, write_results

from kernos.infra.postgres import EmbeddedPostgres
from kernos.kernel.config import DatabaseSettings, StorageSettings
from kernos.kernel.db import upgrade
from kernos.kernel.db.pool import open_pool
from kernos.kernel.file_store import StorageStore

NAMESPACES = [(f"t{n % 10}", f"a{n // 10}") for n in range(100)]
CONCURRENCY = 8


def sources(count: int) -> list[bytes]:
    """About 2 KB each of the standard library's module sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[bytes] = []
    for path in sorted(root.rglob("*.py")):
        data = path.read_bytes()
        chunks += [data[i : i + 2048] for i in range(0, len(data), 2048)]
        if len(chunks) >= count:
            break
    return chunks[:count]


async def rate(count: int, operation: Callable[[int], Awaitable[object]]) -> float:
    """Operations per second, `CONCURRENCY` at once."""
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            await operation(queue.pop())

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return count / (time.monotonic() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    contents = sources(2 * args.files)
    if len(contents) < 2 * args.files:
        sys.exit(f"only {len(contents)} pieces of source found; ask for fewer --files")
    postgres = EmbeddedPostgres.start(Path(tempfile.mkdtemp()) / "data")
    try:
        await upgrade(postgres.dsn(role="owner"))
        pool = await open_pool(DatabaseSettings(dsn=postgres.dsn(), pool_max=16))
        store = StorageStore(pool, StorageSettings(max_namespace_bytes=1 << 40))

        def where(n: int) -> dict[str, str]:
            tenant, agent = NAMESPACES[n % len(NAMESPACES)]
            return {"tenant": tenant, "agent": agent, "path": f"docs/file-{n}.py"}

        async def first(n: int) -> object:
            return await store.write(
                **where(n), content=contents[n], expected_version=0, written_by=f"w1-{n}"
            )

        async def second(n: int) -> object:
            return await store.write(
                **where(n), content=contents[args.files + n], expected_version=1,
                written_by=f"w2-{n}",
            )  # fmt: skip

        async def read(n: int) -> object:
            return await store.read(**where(n), version=None)

        async def rollback(n: int) -> object:
            return await store.rollback(**where(n), version=1, written_by=f"r-{n}")

        figures = {
            "write_new_per_s": await rate(args.files, first),
            "write_version_per_s": await rate(args.files, second),
            "read_per_s": await rate(args.files, read),
            "rollback_per_s": await rate(args.files, rollback),
        }
        await pool.close()
    finally:
        postgres.stop(delete=True)
    result = {
        "files": args.files,
        "namespaces": len(NAMESPACES),
        "concurrency": CONCURRENCY,
        "file_bytes": 2048,
        **{name: round(value, 1) for name, value in figures.items()},
    }
    print(f"{'figure':<24}{'value':>10}")
    for key, value in result.items():
        print(f"{key:<24}{value!s:>10}")
    write_results("storage", result)


if __name__ == "__main__":
    run_benchmark(main)
