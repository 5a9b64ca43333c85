"""Agents written with Pydantic AI, as users write them: this module imports no kernos.

Registered by path (`"tests.typed_agents:plain"`); the registry recognises each agent inside the
pool that runs it. The ones that need kernos's own model or tools are in
`tests/typed_tool_agents.py`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from pydantic_ai import Agent, ApprovalRequired, CallDeferred, RunContext
from pydantic_ai.capabilities import WebFetch
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.toolsets import ExternalToolset

#: The model the fast tier's fake kernel serves (tests/fake_kernel.py). Named, not made: kernos
#: gives the agent its model, so no OpenAI key is needed (`defer_model_check`).
MODEL = "openai:fake-model"

#: No tools, a text answer.
plain = Agent(MODEL, instructions="Answer briefly.", name="plain", defer_model_check=True)


class Launch(BaseModel):
    """What was launched, and whether it was."""

    target: str
    launched: bool


#: A tool of its own that a human must approve, one that is synchronous, and a typed answer.
launching = Agent(
    MODEL, output_type=Launch, instructions="Launch what you are asked to, then report.",
    name="launching", defer_model_check=True,
)  # fmt: skip


@launching.tool_plain(requires_approval=True)
async def launch(target: str) -> str:
    """Launch at `target`."""
    return f"launched at {target}"


@launching.tool_plain
def shout(text: str) -> str:
    """Upper-case `text` (synchronous: Pydantic AI would run it in a thread)."""
    return text.upper()


#: Its tool reaches outside the run: the run fails, naming it.
peeking = Agent(MODEL, name="peeking", defer_model_check=True)


@peeking.tool_plain
def peek() -> str:
    """Read the machine's name: I/O, which code in a run cannot do."""
    return Path("/etc/hostname").read_text()


#: Refused at load: its tool's name is not one a model can call.
misnamed = Agent(MODEL, name="misnamed", defer_model_check=True)


@misnamed.tool_plain(name="shout.loud")
def shout_loud(text: str) -> str:
    """Upper-case `text`."""
    return text.upper()


#: Refused at load: tools run by the app outside the agent.
external = Agent(
    MODEL, name="external", defer_model_check=True,
    toolsets=[ExternalToolset([])],
)  # fmt: skip


#: Refused at load: Pydantic AI's own code would fetch from the web inside the run.
fetching = Agent(MODEL, name="fetching", defer_model_check=True, capabilities=[WebFetch()])

#: Refused at load: kernos chooses among a model's instances; a fallback chain is not a model.
falling_back = Agent(FallbackModel(TestModel(), TestModel()), name="falling-back")


#: A tool that asks for approval itself, and one deferred to be run outside the agent.
asking = Agent(MODEL, name="asking", defer_model_check=True)


@asking.tool
async def delete(ctx: RunContext[object], path: str) -> str:
    """Delete `path`, once a human approved (the tool decides it needs one)."""
    if not ctx.tool_call_approved:
        raise ApprovalRequired
    return f"deleted {path}"


@asking.tool_plain
async def mail(to: str) -> str:
    """Send a mail: deferred to the app, which a run does not have."""
    raise CallDeferred
