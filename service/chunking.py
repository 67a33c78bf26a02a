"""Splitting long texts into overlapping windows of model tokens, as character spans of the text."""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_OVERLAP_TOKENS = 32


def token_windows(offsets: Sequence[tuple[int, int]], max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans covering the tokens whose `offsets` are given, `max_tokens` at a time, each window starting
    `max_tokens - overlap` tokens after the previous one. A text that fits gives a single window."""
    if not offsets:
        return [(0, 0)]
    step = max(1, max_tokens - overlap)
    spans = []
    for first in range(0, len(offsets), step):
        window = offsets[first : first + max_tokens]
        spans.append((window[0][0], window[-1][1]))
        if first + max_tokens >= len(offsets):
            break
    return spans
