"""What every syscall's types share: safe names, no NUL, the request and response bases."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

#: Names of tenants, users and agents: they appear in paths, policies and search attributes.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a safe name, else raise ValueError naming the rule."""
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{kind} {value!r} is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_user(value: str) -> str:
    """Return `value` if it names a user: `name`, or `tenant/name` for a user of another tenant."""
    home, separator, name = value.partition("/")
    for part in (home, name) if separator else (value,):
        if not NAME_PATTERN.match(part):
            raise ValueError(
                f"user {value!r} is not a valid name: a user is 1-64 letters, digits, '.', '_' or "
                "'-', starting with a letter or digit, and '<tenant>/<user>' for a user of "
                "another tenant"
            )
    return value


def no_nul(text: str, what: str) -> str:
    """Return `text`, or raise ValueError naming `what` if it holds a NUL character.

    PostgreSQL text and jsonb cannot hold NUL: it is refused by name, not failed in the store.
    """
    if "\x00" in text:
        raise ValueError(f"the {what} contains a NUL character, which the kernel cannot store")
    return text


class SyscallRequest(BaseModel):
    """Base of every syscall request: it names the resource it touches.

    Which syscall a request is for, and everything else about it, is in the syscall table
    (`kernos.kernel.syscall_table`).
    """

    def resource(self) -> str:
        """The resource that the access manager decides on, e.g. `llm:gemma`."""
        raise NotImplementedError


class SyscallResponse(BaseModel):
    """What a syscall returns: the kernel worker that answered seals it (`result_seal`)."""

    seal: str | None = Field(default=None, repr=False)
    """The kernel worker's seal, checked (and cleared) before the agent sees the response."""
