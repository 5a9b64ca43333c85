"""The memory syscalls, on the kernel queue: scoped by the kernel's record of the caller.

Where an item lives comes from the caller's identity and the request's scope, never from a
tenant or agent name the workflow supplies: `memory:own` is `agent/<the caller's agent>` in the
caller's tenant. The access manager has already decided the request's resource.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity

from kernos.activities.context import activity_key
from kernos.activities.interceptor import caller
from kernos.kernel.access import Subject
from kernos.kernel.config import MemorySettings
from kernos.kernel.embeddings import Embedder
from kernos.kernel.errors import InvalidRequest, PayloadTooLarge
from kernos.kernel.memory_store import MemoryStore
from kernos.kernel.syscall_table import (
    MEMORY_ADD,
    MEMORY_DELETE,
    MEMORY_GET,
    MEMORY_LIST,
    MEMORY_SEARCH,
    MEMORY_UPDATE,
    syscall_of,
)
from kernos.kernel.syscalls import (
    CONVERSATIONS,
    MemoryAdd,
    MemoryAdded,
    MemoryDelete,
    MemoryDeleted,
    MemoryGet,
    MemoryItem,
    MemoryItems,
    MemoryList,
    MemoryScoped,
    MemorySearch,
    MemoryUpdate,
)

#: Past conversation turns a search embeds before it searches, at most: a few seconds of the
#: CPU model, well inside the kernel syscalls' start-to-close timeout. A longer backlog is
#: embedded over several searches (each batch is committed as it is done).
TURNS_PER_SEARCH = 512


def scope_of(request: MemoryScoped, subject: Subject) -> str:
    """The stored scope a request addresses, for its caller."""
    if request.scope is not None:
        return f"shared/{request.scope}"
    return f"agent/{request.agent or subject.agent}"


class MemoryActivities:
    """`memory.add`, `search`, `get`, `update`, `delete` and `list`."""

    def __init__(self, store: MemoryStore, embedder: Embedder, settings: MemorySettings) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings

    def _check_size(self, content: str) -> None:
        size = len(content.encode())
        if size > self.settings.max_content_bytes:
            raise PayloadTooLarge(
                "the memory item's content", size, self.settings.max_content_bytes,
                "[memory] max_content_bytes",
            )  # fmt: skip

    async def _embed(self, text: str) -> list[float]:
        [vector] = await self.embedder.embed([text])
        return vector

    @activity.defn(name=MEMORY_ADD.name)
    async def add(self, request: MemoryAdd) -> MemoryAdded:
        """Embed and store the item; evict the agent's least recently used past its quota."""
        self._check_size(request.content)
        subject = caller()
        item, evicted = await self.store.add(
            tenant=subject.tenant,
            scope=scope_of(request, subject),
            owner=subject.agent,
            content=request.content,
            metadata=request.metadata,
            embedding=await self._embed(request.content),
            written_by=activity_key(),
        )
        return MemoryAdded(**item.model_dump(), evicted=evicted)

    @activity.defn(name=MEMORY_SEARCH.name)
    async def search(self, request: MemorySearch) -> MemoryItems:
        """The `k` items of the scope nearest in meaning to the query."""
        if request.k > self.settings.max_k:
            raise InvalidRequest(
                f"k = {request.k} is over the limit of {self.settings.max_k} ([memory] max_k)"
            )
        self._check_size(request.query)
        subject = caller()
        if request.scope == CONVERSATIONS:
            return MemoryItems(items=await self._search_conversations(request, subject))
        items = await self.store.search(
            tenant=subject.tenant,
            scope=scope_of(request, subject),
            embedding=await self._embed(request.query),
            k=request.k,
            filter=request.filter,
            min_score=request.min_score,
        )
        return MemoryItems(items=items)

    async def _search_conversations(
        self, request: MemorySearch, subject: Subject
    ) -> list[MemoryItem]:
        # Turns are embedded when a search first needs them, so LLM workers never load the
        # embedding model; a long backlog is embedded over several searches.
        pending = await self.store.unembedded_turns(
            tenant=subject.tenant, agent=subject.agent, limit=TURNS_PER_SEARCH
        )
        for start in range(0, len(pending), self.settings.batch_size):
            batch = pending[start : start + self.settings.batch_size]
            vectors = await self.embedder.embed([text for _, _, text in batch])
            await self.store.embed_turns(
                [(conv, seq, vector) for (conv, seq, _), vector in zip(batch, vectors, strict=True)]
            )
            activity.heartbeat(start + len(batch))
        return await self.store.search_conversations(
            tenant=subject.tenant,
            agent=subject.agent,
            embedding=await self._embed(request.query),
            k=request.k,
            filter=request.filter,
            min_score=request.min_score,
        )

    def _not_conversations(self, request: MemoryScoped) -> None:
        if request.scope == CONVERSATIONS:
            raise InvalidRequest(
                f"{syscall_of(request).name} does not apply to past conversations: search them "
                f"with {MEMORY_SEARCH.name}(scope='conversations')"
            )

    @activity.defn(name=MEMORY_GET.name)
    async def get(self, request: MemoryGet) -> MemoryItem:
        """One item by id, from the scope the request names."""
        self._not_conversations(request)
        subject = caller()
        return await self.store.get(
            tenant=subject.tenant, scope=scope_of(request, subject), item_id=request.id
        )

    @activity.defn(name=MEMORY_UPDATE.name)
    async def update(self, request: MemoryUpdate) -> MemoryItem:
        """New content (embedded again) or metadata for an item."""
        if request.content is None and request.metadata is None:
            raise InvalidRequest(f"{MEMORY_UPDATE.name} needs new content, new metadata, or both")
        if request.content is not None:
            self._check_size(request.content)
        subject = caller()
        return await self.store.update(
            tenant=subject.tenant,
            scope=scope_of(request, subject),
            item_id=request.id,
            content=request.content,
            embedding=None if request.content is None else await self._embed(request.content),
            metadata=request.metadata,
        )

    @activity.defn(name=MEMORY_DELETE.name)
    async def delete(self, request: MemoryDelete) -> MemoryDeleted:
        """Forget an item."""
        subject = caller()
        deleted = await self.store.delete(
            tenant=subject.tenant, scope=scope_of(request, subject), item_id=request.id
        )
        return MemoryDeleted(id=request.id, deleted=deleted)

    @activity.defn(name=MEMORY_LIST.name)
    async def list_(self, request: MemoryList) -> MemoryItems:
        """A page of the scope's items, newest first."""
        self._not_conversations(request)
        subject = caller()
        items = await self.store.page(
            tenant=subject.tenant,
            scope=scope_of(request, subject),
            filter=request.filter,
            limit=request.limit,
            before=request.before,
        )
        return MemoryItems(items=items)

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        """The activities, for a worker."""
        return [self.add, self.search, self.get, self.update, self.delete, self.list_]
