"""OpenAI's attribute filters (comparison and compound, nested) in vsearch's filter language, over the file
attributes a vector store keeps in each document's metadata under ATTRIBUTES."""

from __future__ import annotations

from typing import Any

from service.errors import InvalidRequest
from service.search.values import MetadataFilter, metadata_filter

ATTRIBUTES = "attributes"  # where a file's attributes sit in its document's metadata
COMPARISONS = {"eq": "$eq", "ne": "$ne", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte", "in": "$in",
               "nin": "$nin"}  # fmt: skip
COMPOUNDS = {"and": "$and", "or": "$or"}
MAX_DEPTH = 16


def store_filter(spec: dict[str, Any]) -> MetadataFilter:
    """`spec` (OpenAI's shape) validated and translated; InvalidRequest names the bad part by its path."""
    return metadata_filter(_translate(spec, "filters", 0))


def _translate(spec: Any, where: str, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"{where}: filters are nested deeper than {MAX_DEPTH} levels.", param=where)
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    kind = spec.get("type")
    if kind in COMPOUNDS:
        _only(spec, {"type", "filters"}, where)
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise InvalidRequest(f"{where}.filters must be a non-empty array of filters.", param=f"{where}.filters")
        return {COMPOUNDS[kind]: [_translate(p, f"{where}.filters[{i}]", depth + 1) for i, p in enumerate(parts)]}
    if kind in COMPARISONS:
        _only(spec, {"type", "key", "value"}, where)
        key, value = spec.get("key"), spec.get("value")
        if not isinstance(key, str) or not key:
            raise InvalidRequest(f"{where}.key must be an attribute's name.", param=f"{where}.key")
        check_attribute_key(key, f"{where}.key")
        if kind in ("in", "nin") and not isinstance(value, list):
            raise InvalidRequest(f"{where}.value must be an array for '{kind}'.", param=f"{where}.value")
        if kind not in ("in", "nin") and not isinstance(value, str | int | float | bool):
            raise InvalidRequest(f"{where}.value must be a string, number or boolean.", param=f"{where}.value")
        return {f"{ATTRIBUTES}.{key}": {COMPARISONS[kind]: value}}
    allowed = sorted([*COMPARISONS, *COMPOUNDS])
    raise InvalidRequest(f"{where}.type must be one of {allowed}.", param=f"{where}.type")


def _only(spec: dict[str, Any], keys: set[str], where: str) -> None:
    extra = sorted(set(spec) - keys)
    if extra:
        raise InvalidRequest(f"{where} has unknown fields {extra}.", param=f"{where}.{extra[0]}")


def check_attribute_key(key: str, param: str) -> None:
    """A key is a name in a dotted path: no '.', '"' or '\\' (a documented difference from OpenAI)."""
    if any(c in key for c in '."\\'):
        raise InvalidRequest(f"Attribute key {key!r} may not contain '.', '\"' or '\\'.", param=param)
