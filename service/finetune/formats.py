"""Training files (JSONL) -> (query, positive passage, hard negatives) examples, with errors that name the line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MIN_EXAMPLES = 10


@dataclass
class Example:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)


class TrainingFileError(Exception):
    """A training or validation file the job cannot use; `param` says which file."""

    def __init__(self, message: str, line: int | None = None, param: str = "training_file") -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.param = param

    @property
    def code(self) -> str:
        return f"invalid_{self.param}"  # invalid_training_file, invalid_validation_file


def _text(content: Any, line: int) -> str:
    """A message's content: a string, or OpenAI's list of parts ({"type": "text", "text": "..."})."""
    if isinstance(content, str) or content is None:
        return content or ""
    if not isinstance(content, list):
        raise TrainingFileError("a message's 'content' must be a string or an array of content parts", line)
    texts = []
    for part in content:
        if not isinstance(part, dict):
            raise TrainingFileError("a content part must be an object", line)
        if part.get("type") == "text":
            if not isinstance(part.get("text"), str):
                raise TrainingFileError("a text content part's 'text' must be a string", line)
            texts.append(part["text"])
    return "\n".join(texts)


def _last(messages: Any, role: str, line: int) -> str:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TrainingFileError("'messages' must be an array of message objects", line)
    for message in reversed(messages):
        if message.get("role") == role and (text := _text(message.get("content"), line)).strip():
            return text
    raise TrainingFileError(f"no {role} message", line)


def _chat(record: dict, line: int) -> Example:
    messages = record["messages"]
    positive = _last(messages, "assistant", line)
    # The query is the last user message before the (last) assistant reply.
    last_assistant = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    query = _last(messages[:last_assistant], "user", line)
    return Example(query, positive)


def _preference(record: dict, line: int) -> Example:
    source = record.get("input")
    if not isinstance(source, dict):
        raise TrainingFileError("'input' must be an object with 'messages'", line)
    query = _last(source.get("messages"), "user", line)
    preferred = _last(record.get("preferred_output"), "assistant", line)
    negatives = []
    if "non_preferred_output" in record:
        negatives = [_last(record["non_preferred_output"], "assistant", line)]
    return Example(query, preferred, negatives)


def _plain(record: dict, line: int) -> Example:
    query, positive, negative = record.get("query"), record.get("positive"), record.get("negative", [])
    if not isinstance(query, str) or not query.strip():
        raise TrainingFileError("'query' must be a non-empty string", line)
    if not isinstance(positive, str) or not positive.strip():
        raise TrainingFileError("'positive' must be a non-empty string", line)
    negatives = [negative] if isinstance(negative, str) else negative
    if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
        raise TrainingFileError("'negative' must be a string or an array of strings", line)
    return Example(query, positive, negatives)


def parse_examples(lines: Iterable[bytes], minimum: int = MIN_EXAMPLES, method: str = "supervised") -> list[Example]:
    """Every line's example; a dpo job takes preference examples only (their non-preferred output is the
    negative), a supervised one any of the three formats."""
    examples = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TrainingFileError("not valid JSON", number) from None
        if not isinstance(record, dict):
            raise TrainingFileError("expected a JSON object", number)
        if method == "dpo" and "preferred_output" not in record:
            raise TrainingFileError(
                "a dpo job needs preference examples ('input', 'preferred_output', 'non_preferred_output')", number
            )
        if "messages" in record:
            examples.append(_chat(record, number))
        elif "preferred_output" in record:
            examples.append(_preference(record, number))
        elif "query" in record:
            examples.append(_plain(record, number))
        else:
            raise TrainingFileError(
                "expected a chat example ('messages'), a preference example ('input', 'preferred_output') or "
                "{'query', 'positive', 'negative'?}",
                number,
            )
    if len(examples) < minimum:
        raise TrainingFileError(f"the file has {len(examples)} examples; at least {minimum} are required")
    return examples
