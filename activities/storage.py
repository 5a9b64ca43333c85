"""The storage syscalls, on the kernel queue, in the caller's tenant/agent namespace.

The namespace comes from the kernel's record of the run, never from the workflow; the path was
checked when the request was decoded (`kernos.kernel.paths`), and the access manager has
decided `storage:<path>`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity

from kernos.activities.context import activity_key
from kernos.activities.interceptor import caller
from kernos.kernel.embeddings import Embedder
from kernos.kernel.errors import InvalidRequest
from kernos.kernel.file_store import StorageStore
from kernos.kernel.syscall_table import (
    STORAGE_DELETE,
    STORAGE_LIST,
    STORAGE_READ,
    STORAGE_ROLLBACK,
    STORAGE_SEARCH,
    STORAGE_VERSIONS,
    STORAGE_WRITE,
)
from kernos.kernel.syscalls import (
    Encoding,
    FileContent,
    FileDeleted,
    FileHits,
    FileList,
    FileVersion,
    FileVersions,
    StorageDelete,
    StorageList,
    StorageRead,
    StorageRollback,
    StorageSearch,
    StorageVersions,
    StorageWrite,
)

#: File contents a search embeds before it searches, at most (as for conversation turns: a few
#: seconds of the CPU model; a longer backlog is embedded over several searches).
CONTENTS_PER_SEARCH = 256
#: The beginning of a file that is embedded: the model reads 256 word pieces, about 1 KiB.
EMBEDDED_BYTES = 4096


def searchable_text(content: bytes) -> str | None:
    """The beginning of a content, if it is text worth embedding; None if binary or blank."""
    head = content[:EMBEDDED_BYTES]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut inside a character at the end of the slice is still text; elsewhere, binary.
        if len(content) <= EMBEDDED_BYTES or exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8")
    return text if text.strip() else None


def decoded(content: str, encoding: Encoding) -> bytes:
    """The bytes a write carries."""
    if encoding == "utf-8":
        return content.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(content, validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(f"the content is not valid base64: {exc}") from None


def encoded(content: bytes, encoding: Encoding, path: str) -> str:
    """The content as a read returns it."""
    if encoding == "base64":
        return base64.b64encode(content).decode()
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"{path!r} is not UTF-8 text: read it with encoding='base64'"
        ) from None


class StorageActivities:
    """`storage.write`, `read`, `list`, `versions`, `rollback` and `delete`."""

    def __init__(self, store: StorageStore, embedder: Embedder, batch_size: int = 64) -> None:
        self.store = store
        self.embedder = embedder
        self.batch_size = batch_size

    @activity.defn(name=STORAGE_SEARCH.name)
    async def search(self, request: StorageSearch) -> FileHits:
        """Files whose latest content is nearest in meaning to the query.

        Contents are embedded when a search first needs them (text only, its beginning: the
        model reads 256 word pieces), once per tenant and content.
        """
        subject = caller()
        pending = await self.store.unembedded_contents(
            tenant=subject.tenant, agent=subject.agent, limit=CONTENTS_PER_SEARCH
        )
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start : start + self.batch_size]
            texts = [(sha, searchable_text(content)) for sha, content in batch]
            readable = [text for _, text in texts if text is not None]
            vectors = iter(await self.embedder.embed(readable))
            await self.store.set_embeddings(
                subject.tenant,
                [(sha, None if text is None else next(vectors)) for sha, text in texts],
            )
            activity.heartbeat(start + len(batch))
        [query] = await self.embedder.embed([request.query])
        return FileHits(
            files=await self.store.search(
                tenant=subject.tenant,
                agent=subject.agent,
                prefix=request.prefix,
                embedding=query,
                k=request.k,
            )
        )

    @activity.defn(name=STORAGE_WRITE.name)
    async def write(self, request: StorageWrite) -> FileVersion:
        """A new version of the file (or VersionConflict, if `expected_version` has passed)."""
        subject = caller()
        return await self.store.write(
            tenant=subject.tenant,
            agent=subject.agent,
            path=request.path,
            content=decoded(request.content, request.encoding),
            expected_version=request.expected_version,
            written_by=activity_key(),
        )

    @activity.defn(name=STORAGE_READ.name)
    async def read(self, request: StorageRead) -> FileContent:
        """The file at its latest version, or at `version`."""
        subject = caller()
        version, content = await self.store.read(
            tenant=subject.tenant, agent=subject.agent, path=request.path, version=request.version
        )
        return FileContent(
            path=version.path,
            version=version.version,
            size=version.size,
            sha256=version.sha256,
            content=encoded(content, request.encoding, request.path),
            encoding=request.encoding,
        )

    @activity.defn(name=STORAGE_VERSIONS.name)
    async def versions(self, request: StorageVersions) -> FileVersions:
        """Every version of the file, oldest first."""
        subject = caller()
        return FileVersions(
            versions=await self.store.versions(
                tenant=subject.tenant, agent=subject.agent, path=request.path
            )
        )

    @activity.defn(name=STORAGE_ROLLBACK.name)
    async def rollback(self, request: StorageRollback) -> FileVersion:
        """A new version with an earlier version's content."""
        subject = caller()
        return await self.store.rollback(
            tenant=subject.tenant,
            agent=subject.agent,
            path=request.path,
            version=request.version,
            written_by=activity_key(),
        )

    @activity.defn(name=STORAGE_DELETE.name)
    async def delete(self, request: StorageDelete) -> FileDeleted:
        """Mark the file deleted (recoverable by a rollback)."""
        subject = caller()
        deleted = await self.store.delete(
            tenant=subject.tenant, agent=subject.agent, path=request.path
        )
        return FileDeleted(path=request.path, deleted=deleted)

    @activity.defn(name=STORAGE_LIST.name)
    async def list_(self, request: StorageList) -> FileList:
        """The namespace's files under a prefix."""
        subject = caller()
        return FileList(
            files=await self.store.listing(
                tenant=subject.tenant,
                agent=subject.agent,
                prefix=request.prefix,
                include_deleted=request.include_deleted,
                limit=request.limit,
            )
        )

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        """The activities, for a worker."""
        return [
            self.write, self.read, self.versions, self.rollback, self.delete, self.list_,
            self.search,
        ]  # fmt: skip
