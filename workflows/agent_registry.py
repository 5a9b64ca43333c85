"""The agents an agent worker runs, by name.

Names map to import paths, not classes, so that each workflow imports its agent's module
inside Temporal's sandbox, where nondeterministic calls are caught.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kernos.kernel.errors import ConfigError, UnknownAgent

if TYPE_CHECKING:
    from kernos.agent import Agent

_paths: dict[str, str] = {}


def resolve(path: str) -> type[Agent]:
    """Import `module:Class` and check that it is an Agent subclass."""
    from kernos.agent import Agent

    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ConfigError(f"agent path {path!r} is not of the form 'module:Class'")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import agent module {module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"module {module_name!r} has no {qualname!r} (agent path {path!r})")
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, Agent)):
        raise ConfigError(f"{path!r} is not a subclass of kernos.Agent")
    return target


def register(agents: dict[str, str]) -> None:
    """Register agents by name; each is imported once now so a bad path fails at startup."""
    for path in agents.values():
        resolve(path)
    declare(agents)


def declare(agents: dict[str, str]) -> None:
    """Register agents by name without importing them: each run imports its own, sandboxed."""
    _paths.update(agents)


def names() -> list[str]:
    """Registered agent names."""
    return sorted(_paths)


def load(name: str) -> type[Agent]:
    """The class of a registered agent; UnknownAgent lists the registered ones."""
    path = _paths.get(name)
    if path is None:
        raise UnknownAgent(name, names())
    return resolve(path)
