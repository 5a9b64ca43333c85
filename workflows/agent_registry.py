"""The agents an agent worker runs, by name.

Names map to import paths, not classes, so that each workflow imports its agent's module
inside Temporal's sandbox, where nondeterministic calls are caught.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from temporalio import workflow

from kernos.kernel.errors import ConfigError, UnknownAgent

if TYPE_CHECKING:
    from kernos.agent import Agent

_paths: dict[str, str] = {}


def resolve(path: str) -> type[Agent]:
    """Import `module:Class` (an Agent subclass) or `module:agent` (a framework's agent)."""
    from kernos.agent import Agent

    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ConfigError(
            f"agent path {path!r} is not of the form 'module:Class' or 'module:agent'"
        )
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import agent module {module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"module {module_name!r} has no {qualname!r} (agent path {path!r})")
        target = getattr(target, part)
    _load_adapters()
    if isinstance(target, type) and issubclass(target, Agent):
        return target
    adapted = _adapted(target)
    if adapted is None:
        raise ConfigError(
            f"{path!r} is neither a subclass of kernos.Agent nor an agent of a framework kernos "
            "adapts (an agents.Agent of the OpenAI Agents SDK, a compiled LangGraph graph, a "
            "pydantic_ai.Agent)"
        )
    return adapted


def _sdk() -> ModuleType | None:
    """The OpenAI Agents SDK, if the agent's module imported it (and not a module of that name)."""
    sdk = sys.modules.get("agents")
    return sdk if sdk is not None and hasattr(sdk, "Runner") else None


def _langgraph() -> ModuleType | None:
    """LangGraph's graphs, if the agent's module imported LangGraph."""
    return sys.modules.get("langgraph.pregel")


def _pydantic_ai() -> ModuleType | None:
    """Pydantic AI, if the agent's module imported it."""
    return sys.modules.get("pydantic_ai")


def _load_adapters() -> None:
    """Load the adapter of each framework the agent's module imported.

    So a `kernos.Agent` whose code calls the framework itself has its calls go through the
    kernel too; and an OpenAI client anywhere in a run asks the kernel, not a server.
    """
    if _sdk() is not None:
        from kernos.adapters.openai_agents import install

        install()
    # Whatever the agent imports later, even inside its run: a client governed in one pool and
    # not in another would make a history that replays differently.
    from kernos.adapters.openai_transport import install as install_transport

    install_transport()
    if workflow.in_workflow():
        from kernos.adapters.run_threads import in_the_run

        in_the_run(asyncio.get_running_loop())
        if _pydantic_ai() is not None:
            from kernos.adapters.pydantic_ai import in_the_run as typed_in_the_run

            typed_in_the_run()


def _adapted(target: object) -> type[Agent] | None:
    """A framework's agent object as a kernos agent (kernos.adapters), if it is one.

    Recognised by its kind: only a framework the agent's own module imported is looked at.
    """
    sdk = _sdk()
    if sdk is not None and isinstance(target, getattr(sdk, "Agent", ())):
        from kernos.adapters.openai_agents import wrap

        return wrap(target)  # type: ignore[arg-type]  # checked by isinstance above
    graphs = _langgraph()
    if graphs is not None and isinstance(target, getattr(graphs, "Pregel", ())):
        from kernos.adapters.langgraph import wrap as wrap_graph

        return wrap_graph(target)  # type: ignore[arg-type]  # checked by isinstance above
    typed = _pydantic_ai()
    if typed is not None and isinstance(target, getattr(typed, "Agent", ())):
        from kernos.adapters.pydantic_ai import wrap as wrap_typed

        return wrap_typed(target)  # type: ignore[arg-type]  # checked by isinstance above
    builders = sys.modules.get("langgraph.graph.state")
    if builders is not None and isinstance(target, getattr(builders, "StateGraph", ())):
        raise ConfigError(
            "the agent is a LangGraph StateGraph that was not compiled: register "
            "graph.compile() (kernos gives it a checkpointer)"
        )
    return None


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
