"""The memory syscalls' types: scoped items, their metadata, searches and pages."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kernos.kernel.syscalls.common import SyscallRequest, SyscallResponse, check_name, no_nul

MetadataValue = str | int | float | bool
"""Memory metadata values: flat JSON scalars, so filters are simple containment."""


#: The memory scope of the agent's past conversations (searchable, not writable).
CONVERSATIONS = "conversations"


class MemoryScoped(SyscallRequest):
    """Where a memory syscall looks.

    The calling agent's own memory, a named shared scope (`scope`), or another agent's own
    memory (`agent`, for reading). The access manager decides on `memory:own`,
    `memory:shared/<scope>` or `memory:agent/<agent>`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: str | None = None
    agent: str | None = None

    @field_validator("scope", "agent")
    @classmethod
    def _safe(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_name(f"memory {info.field_name}", value)

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if self.scope is not None and self.agent is not None:
            raise ValueError("name a shared scope or another agent's memory, not both")
        return self

    def resource(self) -> str:
        """What the access manager decides on: the scope as a resource.

        `memory:own`, `memory:shared/<scope>`, `memory:agent/<agent>`, or
        `memory:conversations` (the agent's past conversations).
        """
        if self.scope == CONVERSATIONS:
            return "memory:conversations"
        if self.scope is not None:
            return f"memory:shared/{self.scope}"
        if self.agent is not None:
            return f"memory:agent/{self.agent}"
        return "memory:own"


class MemoryWrite(MemoryScoped):
    """A memory syscall that changes items: in the agent's own memory or a shared scope."""

    @field_validator("scope")
    @classmethod
    def _not_conversations(cls, value: str | None) -> str | None:
        if value == CONVERSATIONS:
            raise ValueError(
                "past conversations are written by conversation syscalls and only searched here"
            )
        return value

    @field_validator("agent")
    @classmethod
    def _own_or_shared(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                f"an agent cannot write agent {value!r}'s memory: write its own, or a shared scope"
            )
        return None


def _check_metadata(metadata: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
    for key, value in metadata.items():
        if not 1 <= len(key) <= 64:
            raise ValueError(f"metadata key {key[:80]!r} must be 1-64 characters")
        no_nul(key, "metadata key")
        if isinstance(value, str):
            no_nul(value, f"metadata value of {key!r}")
    if len(metadata) > 32:
        raise ValueError(f"metadata has {len(metadata)} keys; at most 32")
    return metadata


class MemoryAdd(MemoryWrite):
    """`memory.add`: remember `content`, with metadata to filter on."""

    content: str = Field(min_length=1)
    metadata: dict[str, MetadataValue] = {}

    _metadata = field_validator("metadata")(_check_metadata)

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        return no_nul(value, "content")


class MemorySearch(MemoryScoped):
    """`memory.search`: the `k` items nearest in meaning to `query`."""

    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1)
    filter: dict[str, MetadataValue] = {}
    """Only items whose metadata contains all of these pairs."""
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Only items at least this similar (cosine similarity, 1 is identical)."""

    _filter = field_validator("filter")(_check_metadata)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return no_nul(value, "query")


class MemoryGet(MemoryScoped):
    """`memory.get`: one item by id."""

    id: str = Field(min_length=1, max_length=64)


class MemoryUpdate(MemoryWrite):
    """`memory.update`: replace an item's content (re-embedded) or metadata."""

    id: str = Field(min_length=1, max_length=64)
    content: str | None = Field(default=None, min_length=1)
    metadata: dict[str, MetadataValue] | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: str | None) -> str | None:
        return None if value is None else no_nul(value, "content")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, MetadataValue] | None) -> dict[str, MetadataValue] | None:
        return None if value is None else _check_metadata(value)


class MemoryDelete(MemoryWrite):
    """`memory.delete`: forget an item."""

    id: str = Field(min_length=1, max_length=64)


class MemoryList(MemoryScoped):
    """`memory.list`: items newest first, a page at a time."""

    filter: dict[str, MetadataValue] = {}
    limit: int = Field(default=50, ge=1, le=1000)
    before: str | None = Field(default=None, max_length=64)
    """The id of the last item of the previous page."""

    _filter = field_validator("filter")(_check_metadata)


class MemoryItem(SyscallResponse):
    """An item as memory syscalls return it."""

    id: str
    scope: str
    """`agent/<name>` or `shared/<name>`."""
    owner: str
    """The agent that wrote it."""
    content: str
    metadata: dict[str, MetadataValue]
    created_at: datetime
    updated_at: datetime
    score: float | None = None
    """In search results: cosine similarity to the query."""


class MemoryAdded(MemoryItem):
    """What `memory.add` made, and the agent's least recently used items it evicted."""

    evicted: list[str] = []


class MemoryItems(SyscallResponse):
    """Items of `memory.search` (best first) or `memory.list` (newest first)."""

    items: list[MemoryItem]


class MemoryDeleted(SyscallResponse):
    """What `memory.delete` did (a retried delete finds nothing left and says so)."""

    id: str
    deleted: bool
