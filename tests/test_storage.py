"""The storage manager: versioned files in PostgreSQL, confined paths, limits, retries."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kernos import InvalidPath, KernosClient, RunSpec, Settings
from kernos.activities.storage import searchable_text
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import DatabaseSettings, StorageSettings
from kernos.kernel.file_store import StorageStore
from kernos.kernel.paths import check_path
from kernos.kernel.syscalls import StorageList, StorageWrite
from tests.conftest import make_settings, workers
from tests.processes import WorkerProcess, write_worker_configs
from tests.test_memory import CountingEmbedder

BAD_PATHS = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("../other-agent/notes.md", "'..' segment"),
    ("notes/../../escape", "'..' segment"),
    ("./notes.md", "'.' segment"),
    ("notes//today.md", "empty segment"),
    ("notes/", "empty segment"),
    ("notes\\today.md", "backslash"),
    ("nul\x00byte", "U+0000"),
    ("tab\there", "U+0009"),
    ("bell\x07", "U+0007"),
    ("del\x7f", "U+007F"),
    ("x" * 256, "over 255 bytes"),
    ("/".join(["abcdefgh"] * 120), "over 1024 bytes"),
]


@pytest.mark.parametrize(("path", "problem"), BAD_PATHS)
def test_bad_paths_are_named_errors(path: str, problem: str) -> None:
    with pytest.raises(InvalidPath, match=re.escape(problem)):
        check_path(path)
    with pytest.raises(ValidationError, match=re.escape(problem)):
        StorageWrite(path=path, content="x")


@pytest.mark.parametrize("path", ["a", "notes/today.md", "ünïcode/файл.txt", "a/b/c/d.e", "..a"])
def test_good_paths_pass(path: str) -> None:
    assert check_path(path) == path


def test_list_prefixes_are_checked() -> None:
    assert StorageList(prefix="notes/").resource() == "storage:notes/*"
    with pytest.raises(ValidationError, match=r"'\.\.' segment"):
        StorageList(prefix="../")


async def run_files(settings: Settings, steps: list[dict[str, Any]], tenant: str) -> list[Any]:
    async with await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(steps), tenant=tenant))
        result = await handle.result()
    return list(json.loads(result.output))


async def test_files_are_versioned_deduplicated_and_recoverable(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres, storage={"max_file_bytes": 1000})
    tenant = f"t{uuid.uuid4().hex[:8]}"
    png = base64.b64encode(bytes(range(256))).decode()
    steps: list[dict[str, Any]] = [
        {"op": "storage.write", "path": "notes/a.md", "content": "first"},
        {"op": "storage.write", "path": "notes/a.md", "content": "second", "expected_version": 1},
        {"op": "storage.write", "path": "notes/a.md", "content": "third", "expected_version": 1},
        {"op": "storage.write", "path": "notes/b.md", "content": "first"},
        {"op": "storage.write", "path": "img.bin", "content": png, "encoding": "base64"},
        {"op": "storage.read", "path": "img.bin", "encoding": "base64"},
        {"op": "storage.read", "path": "img.bin"},
        {"op": "storage.rollback", "path": "notes/a.md", "version": 1},
        {"op": "storage.read", "path": "notes/a.md"},
        {"op": "storage.versions", "path": "notes/a.md"},
        {"op": "storage.delete", "path": "notes/a.md"},
        {"op": "storage.read", "path": "notes/a.md"},
        {"op": "storage.list", "prefix": "notes/"},
        {"op": "storage.list", "prefix": "notes/", "include_deleted": True},
        {"op": "storage.read", "path": "notes/a.md", "version": 2},
        {"op": "storage.rollback", "path": "notes/a.md", "version": 2},
        {"op": "storage.read", "path": "notes/a.md"},
        {"op": "storage.write", "path": "big.txt", "content": "x" * 1001},
        {"op": "storage.write", "path": "../escape.txt", "content": "x"},
        {"op": "storage.read", "path": "missing.md"},
    ]
    async with workers(settings):
        results = await run_files(settings, steps, tenant)
    (v1, v2, conflict, other, image, image_back, image_as_text, rolled, after_rollback,
     versions, deleted, read_deleted, listed, listed_all, old, recovered, after_recovery,
     too_big, escape, missing) = results  # fmt: skip
    assert (v1["version"], v2["version"]) == (1, 2)
    assert conflict["error"] == "VersionConflict"
    assert "at version 2, not the expected 1" in conflict["message"]
    assert other["sha256"] == v1["sha256"]  # the same content: one blob
    assert image_back["content"] == png and image_back["size"] == 256 == image["size"]
    assert image_as_text["error"] == "InvalidRequest" and "base64" in image_as_text["message"]
    assert (rolled["version"], rolled["action"], rolled["sha256"]) == (3, "rollback", v1["sha256"])
    assert after_rollback["content"] == "first"
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert deleted is True
    assert read_deleted["error"] == "NotFound" and "deleted at version 3" in read_deleted["message"]
    assert [f["path"] for f in listed] == ["notes/b.md"]
    assert [(f["path"], f["deleted"]) for f in listed_all] == [
        ("notes/a.md", True), ("notes/b.md", False),
    ]  # fmt: skip
    assert old["content"] == "second"
    assert recovered["version"] == 4 and after_recovery["content"] == "second"
    assert too_big["error"] == "PayloadTooLarge" and "max_file_bytes" in too_big["message"]
    assert escape["error"] == "InvalidRequest" and "'..' segment" in escape["message"]
    assert missing["error"] == "NotFound"
    # Nothing of the refused writes was stored.
    async with await KernosClient.connect(settings) as client, client.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT path, count(*) AS n FROM file_versions WHERE tenant = %s GROUP BY path"
            " ORDER BY path",
            (tenant,),
        )
        counts = {row["path"]: row["n"] for row in await cursor.fetchall()}
        cursor = await conn.execute("SELECT count(*) AS n FROM blobs WHERE tenant = %s", (tenant,))
        blobs = (await cursor.fetchone() or {})["n"]
    assert counts == {"img.bin": 1, "notes/a.md": 4, "notes/b.md": 1}
    assert blobs == 3  # "first", "second" and the image; "third" was refused


async def test_a_namespace_over_its_limit_refuses_the_write(kernos_client: KernosClient) -> None:
    store = StorageStore(kernos_client.pool, StorageSettings(max_namespace_bytes=10))
    tenant = f"t{uuid.uuid4().hex[:8]}"
    where: dict[str, Any] = {"tenant": tenant, "agent": "a", "expected_version": None}
    await store.write(path="one", content=b"123456", written_by=f"{tenant}-1", **where)
    # The same content again costs nothing: it is stored once.
    await store.write(path="two", content=b"123456", written_by=f"{tenant}-2", **where)
    with pytest.raises(Exception, match="max_namespace_bytes") as refused:
        await store.write(path="three", content=b"12345", written_by=f"{tenant}-3", **where)
    assert type(refused.value).__name__ == "PayloadTooLarge"
    assert [f.path for f in await store.listing(
        tenant=tenant, agent="a", prefix="", include_deleted=True, limit=10
    )] == ["one", "two"]  # fmt: skip


async def test_a_retried_write_makes_one_version(kernos_client: KernosClient) -> None:
    store = StorageStore(kernos_client.pool, StorageSettings())
    tenant = f"t{uuid.uuid4().hex[:8]}"
    write: dict[str, Any] = {
        "tenant": tenant, "agent": "a", "path": "f.txt", "content": b"once",
        "expected_version": 0, "written_by": f"wf/run/7-{tenant}",
    }  # fmt: skip
    first = await store.write(**write)
    # The activity's retry after a crash between the commit and its completion: the same
    # syscall, and its expected version no longer current, yet no conflict and no new version.
    again = await store.write(**write)
    assert again == first
    assert [v.version for v in await store.versions(tenant=tenant, agent="a", path="f.txt")] == [1]


def test_only_text_is_embedded() -> None:
    assert searchable_text(b"plain notes") == "plain notes"
    assert searchable_text(bytes(range(256))) is None  # binary
    assert searchable_text(b"   \n") is None  # blank
    long = "é".encode() * 3000  # 6,000 bytes: the 4,096-byte cut splits no character here...
    assert searchable_text(long) == "é" * 2048
    odd = b"a" + long  # ...and here it splits one: the text before the cut is kept
    assert searchable_text(odd) == "a" + "é" * 2047


async def test_files_are_found_by_meaning(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    embedder = CountingEmbedder()
    tenant = f"t{uuid.uuid4().hex[:8]}"
    steps: list[dict[str, Any]] = [
        {"op": "storage.write", "path": "docs/deploy.md", "content": "How to roll out a new "
         "release to production servers, and how to roll it back."},
        {"op": "storage.write", "path": "docs/lunch.md", "content": "The team lunch menu: "
         "soup on Monday, pasta on Friday."},
        {"op": "storage.write", "path": "notes/copy.md", "content": "How to roll out a new "
         "release to production servers, and how to roll it back."},
        {"op": "storage.write", "path": "blob.bin", "content": base64.b64encode(bytes(range(256)))
         .decode(), "encoding": "base64"},
        {"op": "storage.write", "path": "docs/old.md", "content": "Deploying releases."},
        {"op": "storage.delete", "path": "docs/old.md"},
        {"op": "storage.search", "query": "deploying software", "k": 2, "prefix": "docs/"},
        {"op": "storage.search", "query": "what is there to eat", "k": 1},
        {"op": "storage.search", "query": "deploying software", "k": 5},
    ]  # fmt: skip
    async with workers(settings, embedder=embedder):
        *_, deploy, food, everything = await run_files(settings, steps, tenant)
    assert [hit["path"] for hit in deploy] == ["docs/deploy.md", "docs/lunch.md"]
    assert deploy[0]["score"] > deploy[1]["score"]
    assert deploy[0]["snippet"].startswith("How to roll out a new release")
    assert [hit["path"] for hit in food] == ["docs/lunch.md"]
    # Deleted and binary files are not found; the two copies share one embedding.
    assert {hit["path"] for hit in everything} == {
        "docs/deploy.md",
        "docs/lunch.md",
        "notes/copy.md",
    }
    assert len(embedder.texts) == 2 + 3  # two distinct live texts, then the three queries


async def test_a_worker_killed_between_the_write_and_its_completion_makes_one_version(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = make_settings(temporal, postgres, limits={"kernel_start_to_close_s": 3.0})
    config, _ = write_worker_configs(settings, tmp_path)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    steps = [
        {"op": "storage.write", "path": "f.md", "content": "once", "expected_version": 0},
        {"op": "storage.versions", "path": "f.md"},
    ]
    dying = await WorkerProcess(
        config, "kernel", tmp_path / "dying.log", module="tests.dying_kernel_worker"
    ).start()
    replacement: WorkerProcess | None = None
    agents = settings.model_copy(update={"database": DatabaseSettings(), "llm": []})
    try:
        async with workers(agents, kind="agent"), await KernosClient.connect(settings) as client:
            handle = await client.submit(
                RunSpec(agent="memo", task=json.dumps(steps), tenant=tenant)
            )
            assert dying.process is not None
            assert await asyncio.wait_for(dying.process.wait(), 60) == -signal.SIGKILL
            replacement = await WorkerProcess(config, "kernel", tmp_path / "kernel.log").start()
            result = await asyncio.wait_for(handle.result(), 60)
            view = await client.show(handle.run_id)
    finally:
        for process in (dying, replacement):
            if process is not None:
                await process.stop()
    written, versions = json.loads(result.output)
    # The retry found the first attempt's version: no second version, and no conflict with
    # its own write (expected_version 0 no longer holds once the first attempt committed).
    assert written["version"] == 1
    assert [v["version"] for v in versions] == [1]
    attempts = [c.attempt for c in view.syscalls if c.syscall == "storage.write"]
    assert max(attempts) == 2, attempts


BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({"op": "storage.write", "path": "../x", "content": "x"}, "InvalidRequest", "'..' segment"),
    ({"op": "storage.write", "path": "/x", "content": "x"}, "InvalidRequest", "absolute"),
    ({"op": "storage.write", "path": "a\x00b", "content": "x"}, "InvalidRequest", "U+0000"),
    ({"op": "storage.write", "path": "big", "content": "x" * 2000}, "PayloadTooLarge",
     "max_file_bytes"),
    ({"op": "storage.write", "path": "b64", "content": "not base64!", "encoding": "base64"},
     "InvalidRequest", "not valid base64"),
    ({"op": "storage.write", "path": "v", "content": "x", "expected_version": 3},
     "VersionConflict", "at version 0, not the expected 3"),
    ({"op": "storage.rollback", "path": "nothing", "version": 1}, "NotFound", "no version 1"),
    ({"op": "storage.delete", "path": "nothing"}, "NotFound", "no file"),
    ({"op": "storage.list", "prefix": "../"}, "InvalidRequest", "'..' segment"),
    ({"op": "add", "content": "x" * 20_000}, "PayloadTooLarge", "max_content_bytes"),
    ({"op": "add", "content": ""}, "InvalidRequest", "at least 1 character"),
    ({"op": "add", "content": "x", "metadata": {"": 1}}, "InvalidRequest", "1-64 characters"),
    ({"op": "add", "content": "x", "scope": "a/b"}, "InvalidRequest", "not a valid name"),
    ({"op": "add", "content": "a\x00b"}, "InvalidRequest", "content contains a NUL character"),
    ({"op": "add", "content": "x", "metadata": {"k": "\x00"}}, "InvalidRequest",
     "metadata value of 'k' contains a NUL"),
    ({"op": "search", "query": "\x00"}, "InvalidRequest", "query contains a NUL"),
    ({"op": "llm.chat", "messages": [{"role": "user", "content": "\x00"}]}, "InvalidRequest",
     "message contains a NUL"),
    ({"op": "search", "query": "x", "k": 500}, "InvalidRequest", "max_k"),
    ({"op": "search", "query": "x", "min_score": 2}, "InvalidRequest", "less than or equal"),
    ({"op": "update", "id": "00000000-0000-0000-0000-000000000000"}, "InvalidRequest",
     "needs new content"),
    ({"op": "update", "id": "nope", "content": "x"}, "NotFound", "no memory item 'nope'"),
]  # fmt: skip


async def test_bad_inputs_end_in_named_errors_and_change_nothing(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres, storage={"max_file_bytes": 1000})
    tenant = f"t{uuid.uuid4().hex[:8]}"
    async with workers(settings, embedder=CountingEmbedder()):
        results = await run_files(settings, [step for step, _, _ in BAD_INPUTS], tenant)
    for (step, error, words), result in zip(BAD_INPUTS, results, strict=True):
        assert isinstance(result, dict) and result.get("error") == error, (step, result)
        assert words in result["message"], (step, result)
    async with await KernosClient.connect(settings) as client, client.pool.connection() as conn:
        for table in ("files", "file_versions", "blobs", "memories", "conversations"):
            cursor = await conn.execute(
                f"SELECT count(*) AS n FROM {table} WHERE tenant = %s", (tenant,)
            )
            assert (await cursor.fetchone() or {}).get("n") == 0, table
