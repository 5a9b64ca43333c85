"""The storage syscalls' types: versioned files of the calling agent's namespace."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kernos.kernel.paths import check_path, check_prefix
from kernos.kernel.syscalls.common import SyscallRequest, SyscallResponse


class StorageRequest(SyscallRequest):
    """A storage syscall: a file of the calling agent's namespace, as `storage:<path>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str

    @field_validator("path")
    @classmethod
    def _confined(cls, value: str) -> str:
        return check_path(value)

    def resource(self) -> str:
        """The file, as `storage:<path>`."""
        return f"storage:{self.path}"


Encoding = Literal["utf-8", "base64"]
"""How file content travels: text, or bytes in base64."""


class StorageWrite(StorageRequest):
    """`storage.write`: a new version of the file."""

    content: str
    encoding: Encoding = "utf-8"
    expected_version: int | None = Field(default=None, ge=0)
    """Write only if the file is at this version (0: it must not exist yet); else
    VersionConflict."""


class StorageRead(StorageRequest):
    """`storage.read`: the file's content, at its latest version or at `version`."""

    version: int | None = Field(default=None, ge=1)
    encoding: Encoding = "utf-8"


class StorageVersions(StorageRequest):
    """`storage.versions`: the file's versions, oldest first."""


class StorageRollback(StorageRequest):
    """`storage.rollback`: a new version with the content of `version` (a deleted file too)."""

    version: int = Field(ge=1)


class StorageDelete(StorageRequest):
    """`storage.delete`: mark the file deleted; a rollback recovers it until it is purged."""


class StorageList(SyscallRequest):
    """`storage.list`: the namespace's files under `prefix`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = ""
    include_deleted: bool = False
    limit: int = Field(default=100, ge=1, le=1000)

    @field_validator("prefix")
    @classmethod
    def _confined(cls, value: str) -> str:
        return check_prefix(value)

    def resource(self) -> str:
        """The listed part of the namespace, as `storage:<prefix>*`."""
        return f"storage:{self.prefix}*"


class StorageSearch(SyscallRequest):
    """`storage.search`: the namespace's files whose content is nearest in meaning to `query`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = Field(min_length=1, max_length=16 * 1024)
    k: int = Field(default=5, ge=1, le=100)
    prefix: str = ""

    @field_validator("prefix")
    @classmethod
    def _confined(cls, value: str) -> str:
        return check_prefix(value)

    def resource(self) -> str:
        """The searched part of the namespace, as `storage:<prefix>*`."""
        return f"storage:{self.prefix}*"


class FileHit(BaseModel):
    """A file that `storage.search` found: its latest version, how near, how it begins."""

    path: str
    version: int
    score: float
    snippet: str


class FileHits(SyscallResponse):
    """Files of `storage.search`, best first."""

    files: list[FileHit]


class FileVersion(SyscallResponse):
    """One version of a file."""

    path: str
    version: int
    size: int
    sha256: str
    action: Literal["write", "rollback"]
    created_at: datetime


class FileContent(SyscallResponse):
    """What `storage.read` returns."""

    path: str
    version: int
    size: int
    sha256: str
    content: str
    encoding: Encoding


class FileInfo(BaseModel):
    """A file as `storage.list` shows it."""

    path: str
    version: int
    size: int
    updated_at: datetime
    deleted: bool


class FileList(SyscallResponse):
    """Files of `storage.list`, by path."""

    files: list[FileInfo]


class FileVersions(SyscallResponse):
    """Versions of `storage.versions`, oldest first."""

    versions: list[FileVersion]


class FileDeleted(SyscallResponse):
    """What `storage.delete` did (False: already deleted)."""

    path: str
    deleted: bool
