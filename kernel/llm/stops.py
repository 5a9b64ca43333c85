"""Where a generation stops: the request's own stop strings and the chat template's turn markers.

A chat server ends a reply at the model's end-of-turn token. A model whose weights carry no
chat template (the packaged Gemma 3 270M is one) is served llama.cpp's fallback, ChatML, whose
`<|im_end|>` and `<|im_start|>` are plain text to that model's tokenizer: the model writes them
as text and goes on to invent the next turns. So the kernel reads the template's markers off a
rendered probe and stops there, as it would at the request's own `stop`.

A server matches stop strings within one request only; a generation resumed from its ids (a
crash, a time slice) can hold a marker split across the cut, so the kernel also cuts the whole
text at the first stop (`first_stop`).
"""

from __future__ import annotations

import re

#: A message whose rendering shows what the template puts after a turn.
PROBE = "kernos-turn-probe"

#: A marker is a run of angle-bracketed tags (`<|im_end|>`, `<end_of_turn>`), never words: a
#: template that separates turns with text (`### Response:`) gets no stop of ours.
_MARKER = re.compile(r"(?:<[^<>\s]+>)+")
#: The role name the template writes after its turn opener (`<|im_start|>assistant`).
_ROLE = re.compile(r"[A-Za-z_]+$")


def template_markers(rendered: str, probe: str = PROBE) -> list[str]:
    """The markers that close the probe's turn and open the next, from a rendered chat.

    `rendered` is a one-user-message chat with the generation prompt, as the server renders
    it: ChatML's `<|im_start|>user`, the probe, `<|im_end|>`, `<|im_start|>assistant` (one a
    line) gives `<|im_end|>` and `<|im_start|>`.
    """
    _, found, after = rendered.rpartition(probe)
    if not found:
        return []
    markers: list[str] = []
    for piece in after.split():
        marker = _ROLE.sub("", piece) or piece
        if _MARKER.fullmatch(marker) and marker not in markers:
            markers.append(marker)
    return markers


def first_stop(text: str, stops: list[str]) -> int | None:
    """Where in `text` the first of `stops` begins, if one occurs."""
    found = [index for index in (text.find(stop) for stop in stops if stop) if index >= 0]
    return min(found) if found else None
