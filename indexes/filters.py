"""Metadata filters, Mongo/Chroma style, validated once into a typed, dialect-neutral MetadataFilter; each engine
compiles it into its own SQL (indexes/embedded/filters.py for SQLite, indexes/postgres/filters.py for PostgreSQL),
as Chroma's segments translate its Where.

    {"genre": "drama"}                                 equality (scalar values)
    {"year": {"$gte": 1990, "$lt": 2000}}              $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"$or": [{"a": 1}, {"$not": {"b.c": true}}]}       $and $or $not; dotted paths reach into nested objects

Semantics (the tests check both engines against a plain Python evaluation):
- Values are compared by JSON type: 1 never equals true or "1"; ordering ($gt…) applies to numbers against
  numbers and strings against strings, and a field of another type, or a missing one, does not match.
- $ne and $nin match documents where the field is missing (as in MongoDB): they are Not(Equals) and Not(In).
- Arrays and objects are not compared: a filter value must be a string, number, boolean or null.

User input only ever reaches SQL as bound parameters; the SQL text comes from the compilers alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Union

import msgspec

from indexes.errors import InvalidFilter

Scalar = str | int | float | bool | None
ValueKind = Literal["number", "text"]  # what an ordering or membership compares
Ordering = Literal["$gt", "$gte", "$lt", "$lte"]
FIELD_OPERATORS = {"$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte"}
MAX_DEPTH = 32
MAX_IN_VALUES = 10_000
INT64 = (-(2**63), 2**63 - 1)


class Equals(msgspec.Struct, frozen=True, tag=True):
    field: str  # a dotted path, checked by json_path()
    value: Scalar


class Compare(msgspec.Struct, frozen=True, tag=True):
    field: str
    op: Ordering
    value: str | int | float  # a number or a string: never a boolean or null


class In(msgspec.Struct, frozen=True, tag=True):
    field: str
    values: tuple[Scalar, ...]  # not empty


class Exists(msgspec.Struct, frozen=True, tag=True):
    field: str
    present: bool


class All(msgspec.Struct, frozen=True, tag=True):
    parts: tuple[FilterNode, ...]  # none: matches everything ({} in the language)


class Any_(msgspec.Struct, frozen=True, tag="Any"):
    parts: tuple[FilterNode, ...]  # at least one


class Not(msgspec.Struct, frozen=True, tag=True):
    part: FilterNode


FilterNode = Union[Equals, Compare, In, Exists, All, Any_, Not]  # noqa: UP007 (a forward reference in the Structs)


class MetadataFilter(msgspec.Struct, frozen=True):
    """A validated filter: hashable, comparable, and free of any SQL dialect."""

    root: FilterNode


def parse_filter(spec: Any) -> MetadataFilter:
    """The filter `spec` as given by a caller, validated (InvalidFilter names the bad part)."""
    return MetadataFilter(_node(spec, "filter", 0))


def json_path(field: str, where: str = "field") -> str:
    """A dotted field name as a JSON path: 'a.b' -> '$."a"."b"'."""
    parts = field.split(".")
    if any(not part or '"' in part or "\\" in part for part in parts):
        raise InvalidFilter("a field path is dot-separated names, none empty and none with '\"' or '\\'", where)
    return "$" + "".join(f'."{part}"' for part in parts)


def _node(spec: Any, path: str, depth: int) -> FilterNode:
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"nested deeper than {MAX_DEPTH} levels", path)
    if not isinstance(spec, dict):
        raise InvalidFilter("expected an object", path)
    parts: list[FilterNode] = []
    for key, value in spec.items():
        where = f"{path}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{key} takes a non-empty array of filters", where)
            nodes = tuple(_node(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
            parts.append(All(nodes) if key == "$and" else Any_(nodes))
        elif key == "$not":
            parts.append(Not(_node(value, where, depth + 1)))
        elif key.startswith("$"):
            raise InvalidFilter(f"unknown operator '{key}' (use $and, $or, $not, or a field name)", where)
        else:
            parts.append(_field(key, value, where))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _field(field: str, condition: Any, where: str) -> FilterNode:
    json_path(field, where)
    if not (isinstance(condition, dict) and any(key.startswith("$") for key in condition)):
        return Equals(field, _scalar(condition, where))
    parts = []
    for op, value in condition.items():
        at = f"{where}.{op}"
        if op not in FIELD_OPERATORS:
            raise InvalidFilter(f"unknown operator '{op}'", at)
        if op in ("$eq", "$ne"):
            equals = Equals(field, _scalar(value, at))
            parts.append(equals if op == "$eq" else Not(equals))
        elif op in ("$in", "$nin"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{op} takes a non-empty array of values", at)
            if len(value) > MAX_IN_VALUES:
                raise InvalidFilter(f"{op} takes at most {MAX_IN_VALUES:,} values", at)
            member = In(field, tuple(_scalar(v, f"{at}[{i}]") for i, v in enumerate(value)))
            parts.append(member if op == "$in" else Not(member))
        elif op == "$exists":
            if not isinstance(value, bool):
                raise InvalidFilter("$exists takes true or false", at)
            parts.append(Exists(field, value))
        else:
            value = _scalar(value, at)
            if isinstance(value, bool) or value is None:
                raise InvalidFilter(f"{op} takes a number or a string", at)
            parts.append(Compare(field, op, value))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, list | dict):
        raise InvalidFilter(
            "values must be a string, number, boolean or null (arrays and objects are not compared)", where
        )
    if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        raise InvalidFilter("integer out of the 64-bit range", where)
    if not isinstance(value, str | int | float | bool | type(None)):
        raise InvalidFilter("unsupported value", where)
    return value


def kind_of(value: Scalar) -> ValueKind:
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else "text"


COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class FilterCompiler:
    """The walk every dialect shares: the structure (all, any, not) is SQL's own; each leaf is the dialect's
    (equals, typed, any_of, exists), with its values bound through bind()."""

    ALWAYS = "1"

    def __init__(self, params: list[Any]) -> None:
        self.params = params

    def compile(self, node: FilterNode) -> str:
        if isinstance(node, All | Any_):
            if not node.parts:
                return self.ALWAYS
            parts = [self.compile(part) for part in node.parts]
            return (
                parts[0] if len(parts) == 1 else "(" + (" AND " if isinstance(node, All) else " OR ").join(parts) + ")"
            )
        if isinstance(node, Not):
            return f"NOT ({self.compile(node.part)})"
        path = json_path(node.field)
        if isinstance(node, Equals):
            return self.equals(path, node.value)
        if isinstance(node, Compare):
            value = node.value
            return self.typed(path, kind_of(value), lambda field: f"{field} {COMPARISONS[node.op]} {self.bind(value)}")
        if isinstance(node, In):
            return f"({self.any_of(path, list(node.values))})"
        return self.exists(path, node.present)

    # the leaves, each a definite true or false (never SQL's NULL, which NOT would keep 'unknown')

    def bind(self, value: Any) -> str:
        raise NotImplementedError

    def equals(self, path: str, value: Scalar) -> str:
        raise NotImplementedError

    def typed(self, path: str, kind: ValueKind, test: Callable[[str], str]) -> str:
        """The field holds a value of `kind` and it passes `test(value SQL)`; `test` binds its own values."""
        raise NotImplementedError

    def any_of(self, path: str, values: list[Scalar]) -> str:
        raise NotImplementedError

    def exists(self, path: str, present: bool) -> str:
        raise NotImplementedError
