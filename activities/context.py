"""The context manager on an LLM worker: conversations in and out of the model's window.

`llm.chat` on a conversation appends the new turn, generates from the whole active
conversation, appends the reply and says how full the window is. `llm.compact` applies the
kernel's one rule: the oldest turns after the system prompt (earlier summaries first) are
summarised by the model, as few as bring the rest with the summary under `keep_ratio` of the
window, and the summary takes their place (the originals are kept). The latest exchange always
stays; where the window or token counts are unknown, everything before it is summarised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from temporalio import activity

from kernos.activities.interceptor import caller
from kernos.kernel.config import ContextSettings
from kernos.kernel.conversations import ConversationStore, StoredMessage
from kernos.kernel.errors import ContextTooLong
from kernos.kernel.llm.base import LLMBackend, Progress, PromptSize
from kernos.kernel.syscall_table import CONVERSATION_OPEN, LLM_COMPACT
from kernos.kernel.syscalls import (
    Compaction,
    CompactRequest,
    ConversationOpen,
    ConversationRef,
    LLMRequest,
    LLMResponse,
    Message,
    Sampling,
)

#: The part number of a syscall's reply among the messages it writes (its new turn comes first).
REPLY_PART = 1 << 30

SUMMARY_INSTRUCTION = (
    "Summarise the conversation below for your own later use. Keep every fact, name, number, "
    "decision and open question; drop pleasantries. Write plain prose, no preamble."
)


def activity_key() -> str:
    """The current activity, named uniquely across runs, executions and attempts' retries."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


def in_context(active: Sequence[StoredMessage]) -> list[Message]:
    """The active conversation as the model gets it.

    Summaries are folded into the system prompt, so chat templates that insist on alternating
    user and assistant turns accept it.
    """
    system = [m.content for m in active if m.role == "system" and not m.is_summary]
    summaries = [m.content for m in active if m.is_summary]
    if summaries:
        system.append("Summary of the earlier conversation:\n" + "\n\n".join(summaries))
    head = [Message(role="system", content="\n\n".join(system))] if system else []
    return head + [Message.model_validate(m.model_dump()) for m in active if m.role != "system"]


class ContextWindow:
    """The AIOS context manager for one LLM instance: its conversations in and out of its window.

    (Not a Python context manager, hence the name.)
    """

    def __init__(
        self,
        backend: LLMBackend,
        conversations: ConversationStore,
        settings: ContextSettings,
        window: int | None = None,
    ) -> None:
        self.backend = backend
        self.conversations = conversations
        self.settings = settings
        self._window = window

    def window(self, measured: PromptSize | None = None) -> int | None:
        """The configured window, else the one the server reported (it does not change)."""
        if self._window is None and measured is not None:
            self._window = measured.window
        return self._window

    async def resolve(self, request: LLMRequest, run_id: str, written_by: str) -> LLMRequest:
        """The request with its conversation's messages, after appending its new turn."""
        if request.conversation is None:
            return request
        await self.conversations.append(request.conversation, run_id, request.messages, written_by)
        active = await self.conversations.active(request.conversation, run_id)
        return request.model_copy(update={"messages": in_context(active)})

    async def too_long(self, request: LLMRequest, resolved: LLMRequest) -> ContextTooLong:
        """The error for a prompt over the window: the new turn alone, or the conversation."""
        measured = await self.backend.measure(resolved)
        window = self.window(measured)
        alone = await self.backend.measure(request.model_copy(update={"conversation": None}))
        if window is not None and alone.tokens is not None and alone.tokens >= window:
            return ContextTooLong(
                f"the new message is {alone.tokens} tokens and the model's context window is "
                f"{window} tokens: it cannot fit, however the conversation is compacted"
            )
        return ContextTooLong(
            f"the conversation is {measured.tokens} tokens and the model's context window is "
            f"{window} tokens: compact it ({LLM_COMPACT.name}) before the next turn"
        )

    async def conclude(
        self, resolved: LLMRequest, response: LLMResponse, run_id: str, written_by: str
    ) -> LLMResponse:
        """Append the reply to the conversation; say how full the window is."""
        if resolved.conversation is None:
            return response
        reply = Message(role="assistant", content=response.text)
        await self.conversations.append(
            resolved.conversation, run_id, [reply], written_by, first_part=REPLY_PART
        )
        prompt = response.usage.input_tokens - response.resumed_from
        window = self.window() or self.window(await self.backend.measure(resolved))
        return response.model_copy(
            update={
                "context_tokens": prompt + response.usage.output_tokens,
                "compact_at": None if window is None else int(window * self.settings.compact_ratio),
            }
        )

    async def compact(
        self, request: CompactRequest, run_id: str, written_by: str, progress: Progress
    ) -> Compaction:
        """Summarise the oldest turns after the system prompt, in their place."""
        active = await self.conversations.active(request.conversation, run_id)
        before = await self.backend.measure(_request(request.model, in_context(active)))
        cut = await self._cut(request.model, active, before)
        if cut == 0:
            return Compaction(
                summarized=0, tokens_before=before.tokens or 0, tokens_after=before.tokens or 0
            )
        turns = [m for m in active if m.role != "system"]
        replaced = [m for m in active if m.is_summary] + turns[:cut]
        transcript = "\n\n".join(f"{m.role}: {m.content}" for m in replaced)
        instruction = Message(role="system", content=SUMMARY_INSTRUCTION)
        summary_request = _request(
            request.model,
            [instruction, Message(role="user", content=transcript)],
            Sampling(max_tokens=self.settings.summary_tokens, temperature=0.0),
        )
        response = await self.backend.chat(summary_request, progress)
        await self.conversations.summarize(
            request.conversation, run_id, [m.seq for m in replaced], response.text, written_by
        )
        active = await self.conversations.active(request.conversation, run_id)
        after = await self.backend.measure(_request(request.model, in_context(active)))
        return Compaction(
            summarized=len(replaced),
            tokens_before=before.tokens or 0,
            tokens_after=after.tokens or 0,
            usage=response.usage,
        )

    async def _cut(self, model: str, active: Sequence[StoredMessage], measured: PromptSize) -> int:
        """How many of the oldest turns to summarise: the fewest that make the rest fit.

        A cut falls before a user turn, so the kept turns alternate as chat templates expect,
        and never inside the latest exchange. Fewer turns kept is never longer, so the cut is
        found by bisection, one tokenisation per step.
        """
        turns = [m for m in active if m.role != "system"]
        cuts = [i for i in range(1, len(turns) - 1) if turns[i].role == "user"]
        if not cuts:
            return 0
        window = self.window(measured)
        if window is None or measured.tokens is None:
            return cuts[-1]
        target = int(window * self.settings.keep_ratio) - self.settings.summary_tokens
        head = [m for m in active if m.role == "system" and not m.is_summary]
        low, high = 0, len(cuts) - 1
        while low < high:
            middle = (low + high) // 2
            kept = await self.backend.measure(
                _request(model, in_context(head + turns[cuts[middle] :]))
            )
            if kept.tokens is not None and kept.tokens <= target:
                high = middle
            else:
                low = middle + 1
        return cuts[low]


def _request(model: str, messages: list[Message], sampling: Sampling | None = None) -> LLMRequest:
    return LLMRequest(model=model, messages=messages, sampling=sampling or Sampling())


class ConversationActivities:
    """`conversation.open`, on the kernel queue."""

    def __init__(self, conversations: ConversationStore) -> None:
        self.conversations = conversations

    @activity.defn(name=CONVERSATION_OPEN.name)
    async def open(self, request: ConversationOpen) -> ConversationRef:
        """Start a conversation owned by the calling run; a retry returns the same one."""
        subject = caller()
        conversation_id = "conv-" + hashlib.sha256(activity_key().encode()).hexdigest()[:24]
        await self.conversations.open(
            conversation_id,
            run_id=subject.run_id,
            tenant=subject.tenant,
            agent=subject.agent,
            model=request.model,
            system=request.system,
        )
        return ConversationRef(id=conversation_id, model=request.model)
