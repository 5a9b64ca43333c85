"""Search attributes that let operators filter runs in the Temporal UI and CLI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

AGENT = SearchAttributeKey.for_keyword("KernosAgent")
TENANT = SearchAttributeKey.for_keyword("KernosTenant")
STATUS = SearchAttributeKey.for_keyword("KernosStatus")

ALL = (AGENT, TENANT, STATUS)


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` flags that register the attributes at start."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags
