"""The chat template's turn markers, read off a rendering, and the cut at the first stop."""

from __future__ import annotations

import pytest

from kernos.kernel.llm.stops import PROBE, first_stop, template_markers


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
