"""The ABI's validation: bad input is named, never half-accepted."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kernos import LLMRequest, Message, RunSpec, TokenUsage
from kernos.kernel.syscall_table import syscall_of
from kernos.kernel.syscalls import ApprovalAsk, ToolCallRequest


def test_defaults() -> None:
    spec = RunSpec(agent="planner", task="do it")
    assert (spec.tenant, spec.user, spec.priority, spec.model) == ("default", "operator", 3, None)


@pytest.mark.parametrize("task", ["", "   ", "\n\t"])
def test_empty_task_is_refused(task: str) -> None:
    with pytest.raises(ValidationError, match="task is empty"):
        RunSpec(agent="planner", task=task)


@pytest.mark.parametrize("priority", [0, 6, -1, 100])
def test_priority_outside_temporal_range(priority: int) -> None:
    with pytest.raises(ValidationError, match="priority"):
        RunSpec(agent="planner", task="t", priority=priority)


@pytest.mark.parametrize("priority", ["high", "1.5", None])
def test_priority_not_a_number(priority: object) -> None:
    with pytest.raises(ValidationError, match="priority"):
        RunSpec.model_validate({"agent": "planner", "task": "t", "priority": priority})


UNSAFE = [
    "../etc",
    "a/b",
    "a\\b",
    "tab\there",
    "nul\x00",
    "new\nline",
    "",
    ".hidden",
    "x" * 65,
    "é",
]


@pytest.mark.parametrize(
    ("field", "name"),
    # `a/b` is a user of tenant a (below); no tenant or agent has a slash.
    [(f, n) for f in ("tenant", "user", "agent") for n in UNSAFE if (f, n) != ("user", "a/b")],
)
def test_unsafe_names(field: str, name: str) -> None:
    with pytest.raises(ValidationError, match=f"{field} .* is not a valid name"):
        RunSpec.model_validate({"agent": "planner", "task": "t", field: name})


def test_a_user_of_another_tenant_is_qualified_by_it() -> None:
    spec = RunSpec.model_validate({"agent": "planner", "task": "t", "user": "partner/carol"})
    assert spec.user == "partner/carol"
    with pytest.raises(ValidationError, match="is of tenant 'acme' itself: name it 'carol'"):
        RunSpec.model_validate({"agent": "a", "task": "t", "tenant": "acme", "user": "acme/carol"})
    for name in ("a/b/c", "/carol", "partner/", "../carol", "partner/.."):
        with pytest.raises(ValidationError, match="'<tenant>/<user>' for a user of another"):
            RunSpec.model_validate({"agent": "planner", "task": "t", "user": name})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        RunSpec.model_validate({"agent": "planner", "task": "t", "tenant_id": "x"})


def test_llm_request_names_its_resource() -> None:
    request = LLMRequest(model="gemma", messages=[Message(role="user", content="hi")])
    assert request.resource() == "llm:gemma"
    assert syscall_of(request).name == "llm.chat"


def test_llm_request_needs_a_message() -> None:
    with pytest.raises(ValidationError, match="messages"):
        LLMRequest(model="gemma", messages=[])


def test_usage_adds_up() -> None:
    total = TokenUsage(input_tokens=3, output_tokens=4) + TokenUsage(input_tokens=1)
    assert (total.input_tokens, total.output_tokens, total.total_tokens) == (4, 4, 8)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a\x00b", "contains a NUL character"),
        ("a\ud800b", "unable to parse raw data as a unicode string"),  # pydantic's own check
    ],
)
@pytest.mark.parametrize("field", ["arguments", "call_id"])
def test_what_the_store_cannot_hold_is_refused_by_name(text: str, problem: str, field: str) -> None:
    # Kept in jsonb (the ledger, an approval's request): refused here, not failed and retried
    # in the store.
    for request, named in ((ToolCallRequest, {"name": "t"}), (ApprovalAsk, {"tool": "t"})):
        with pytest.raises(ValidationError, match=f"{field}\\W.*{problem}"):
            request(**named, **{field: text})
