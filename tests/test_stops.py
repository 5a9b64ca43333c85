"""The chat template's turn markers, read off a rendering, and the cut at the first stop."""

from __future__ import annotations

import pytest

from kernos.kernel.llm.llamacpp import LlamaCppBackend
from kernos.kernel.llm.stops import PROBE, first_stop, template_markers
from kernos.kernel.syscalls import JSONSchemaFormat, LLMRequest, Message, Sampling


@pytest.mark.parametrize(
    ("rendered", "markers"),
    [
        # llama.cpp's fallback for a model without a template of its own
        (f"<|im_start|>user\n{PROBE}<|im_end|>\n<|im_start|>assistant\n",
         ["<|im_end|>", "<|im_start|>"]),
        (f"<bos><start_of_turn>user\n{PROBE}<end_of_turn>\n<start_of_turn>model\n",
         ["<end_of_turn>", "<start_of_turn>"]),
        # Llama 3 closes a turn with an end token the server stops at anyway: nothing to add.
        (f"<|start_header_id|>user<|end_header_id|>\n\n{PROBE}<|eot_id|><|start_header_id|>"
         "assistant<|end_header_id|>\n\n", []),
        # Turns separated by words: stopping at them would cut ordinary answers.
        (f"### Instruction:\n{PROBE}\n\n### Response:\n", []),
        ("a rendering without the probe", []),
    ],
)  # fmt: skip
def test_markers_are_the_tags_after_the_probe(rendered: str, markers: list[str]) -> None:
    assert template_markers(rendered) == markers


def test_the_first_stop_wins_wherever_it_is() -> None:
    stops = ["<|im_start|>", "<|im_end|>"]
    assert first_stop("Paris.<|im_end|>\n<|im_start|>user", stops) == len("Paris.")
    assert first_stop("Paris.", stops) is None
    assert first_stop("x", ["", "y"]) is None  # an empty stop matches nothing


async def test_a_json_schema_reply_is_not_cut_at_a_marker_its_strings_may_hold() -> None:
    backend = LlamaCppBackend("local", "http://127.0.0.1:9")
    backend._markers = ["<|im_end|>", "<|im_start|>"]  # as read off the server's template
    asked = LLMRequest(
        model="m",
        messages=[Message(role="user", content="hi")],
        sampling=Sampling(stop=["\n\n"]),
    )
    try:
        assert backend.stops(asked) == ["\n\n", "<|im_end|>", "<|im_start|>"]
        schema = JSONSchemaFormat(name="city", json_schema={"type": "object"})
        assert backend.stops(asked.model_copy(update={"response_format": schema})) == ["\n\n"]
    finally:
        await backend.aclose()
