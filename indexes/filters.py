"""Metadata filters, Mongo/Chroma style, compiled to parameterised SQL over the documents' JSON metadata.

    {"genre": "drama"}                                 equality (scalar values)
    {"year": {"$gte": 1990, "$lt": 2000}}              $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"$or": [{"a": 1}, {"$not": {"b.c": true}}]}       $and $or $not; dotted paths reach into nested objects

Semantics (the tests check them against a plain Python evaluation):
- Values are compared by JSON type: 1 never equals true or "1"; ordering ($gt…) applies to numbers against
  numbers and strings against strings, and a field of another type, or a missing one, does not match.
- $ne and $nin match documents where the field is missing (as in MongoDB).
- Arrays and objects are not compared: a filter value must be a string, number, boolean or null.

User input only ever reaches SQL as bound parameters; the SQL text comes from this module alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from indexes.errors import InvalidFilter

Scalar = str | int | float | bool | None
COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
FIELD_OPERATORS = {"$eq", "$ne", "$in", "$nin", "$exists", *COMPARISONS}
MAX_DEPTH = 32
MAX_IN_VALUES = 10_000
NUMBER_TYPES = "('integer', 'real')"
JSON_CONSTANTS = (("true", True), ("false", False), ("null", None))
INT64 = (-(2**63), 2**63 - 1)


def definite(condition: str) -> str:
    """A missing field makes json_type() NULL, and SQL's NULL would turn NOT(...) into 'unknown': make every leaf
    true or false."""
    return f"coalesce(({condition}), 0)"


class MetadataFilter(msgspec.Struct, frozen=True):
    """A validated filter: `sql` is a boolean expression over the documents table `d` (its metadata JSON, and the
    columns of the fields it was compiled for), `params` its bound values, `spec` the filter as given (an index
    with declared fields compiles it again for them)."""

    sql: str
    params: tuple[Any, ...]
    spec: Any


def compile_filter(spec: Any, indexed_fields: Iterable[str] = ()) -> MetadataFilter:
    """`indexed_fields`: metadata fields with a column and a B-tree index of their own (index_column), which
    comparisons on them use; the results are the same either way."""
    params: list[Any] = []
    columns = {json_path(field): index_column(field) for field in indexed_fields}
    sql = FilterCompiler("d.metadata", params, columns).node(spec, "filter", 0)
    return MetadataFilter(sql, tuple(params), spec)


def json_path(field: str, where: str = "field") -> str:
    """A dotted field name as an SQLite JSON path: 'a.b' -> '$."a"."b"'."""
    parts = field.split(".")
    if any(not part or '"' in part or "\\" in part for part in parts):
        raise InvalidFilter("a field path is dot-separated names, none empty and none with '\"' or '\\'", where)
    return "$" + "".join(f'."{part}"' for part in parts)


def index_column(field: str) -> str:
    """The generated column (and, with the prefix mi_, the index) that holds a declared field's value."""
    return "m_" + hashlib.sha1(field.encode()).hexdigest()[:16]


class FilterCompiler:
    """SQLite's dialect. The validation and the structure (node, field, operator) are shared with other dialects,
    which override the leaves: bind, definite, exists, typed, any_of, equals."""

    ALWAYS = "1"

    def __init__(self, column: str, params: list[Any], columns: dict[str, str]) -> None:
        self.column = column
        self.params = params
        self.columns = columns  # JSON path -> generated column, for declared fields

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def node(self, spec: Any, path: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise InvalidFilter(f"nested deeper than {MAX_DEPTH} levels", path)
        if not isinstance(spec, dict):
            raise InvalidFilter("expected an object", path)
        if not spec:
            return self.ALWAYS  # {} matches everything, as in MongoDB
        clauses = []
        for key, value in spec.items():
            where = f"{path}.{key}"
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise InvalidFilter(f"{key} takes a non-empty array of filters", where)
                parts = [self.node(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
                clauses.append("(" + (" AND " if key == "$and" else " OR ").join(parts) + ")")
            elif key == "$not":
                clauses.append(f"NOT ({self.node(value, where, depth + 1)})")
            elif key.startswith("$"):
                raise InvalidFilter(f"unknown operator '{key}' (use $and, $or, $not, or a field name)", where)
            else:
                clauses.append(self.field(key, value, where))
        return clauses[0] if len(clauses) == 1 else "(" + " AND ".join(clauses) + ")"

    def field(self, field: str, condition: Any, where: str) -> str:
        path = json_path(field, where)
        if isinstance(condition, dict) and any(key.startswith("$") for key in condition):
            if not condition:
                raise InvalidFilter("empty condition", where)
            parts = []
            for op, value in condition.items():
                if op not in FIELD_OPERATORS:
                    raise InvalidFilter(f"unknown operator '{op}'", f"{where}.{op}")
                parts.append(self.operator(path, op, value, f"{where}.{op}"))
            return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"
        return self.equals(path, condition, where)

    def operator(self, path: str, op: str, value: Any, where: str) -> str:
        if op == "$eq":
            return self.equals(path, value, where)
        if op == "$ne":
            return f"NOT ({self.equals(path, value, where)})"
        if op in ("$in", "$nin"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{op} takes a non-empty array of values", where)
            if len(value) > MAX_IN_VALUES:
                raise InvalidFilter(f"{op} takes at most {MAX_IN_VALUES:,} values", where)
            any_of = self.any_of(path, [self.scalar(v, f"{where}[{i}]") for i, v in enumerate(value)])
            return any_of if op == "$in" else f"NOT {any_of}"
        if op == "$exists":
            if not isinstance(value, bool):
                raise InvalidFilter("$exists takes true or false", where)
            return self.exists(path, value)
        # $gt $gte $lt $lte
        value = self.scalar(value, where)
        if isinstance(value, bool) or value is None:
            raise InvalidFilter(f"{op} takes a number or a string", where)
        types = NUMBER_TYPES if isinstance(value, int | float) else "('text')"
        return self.typed(path, types, lambda field: f"{field} {COMPARISONS[op]} {self.bind(value)}")

    def definite(self, condition: str) -> str:
        return definite(condition)

    def exists(self, path: str, present: bool) -> str:
        return f"(json_type({self.column}, {self.bind(path)}) IS {'NOT ' if present else ''}NULL)"

    def typed(self, path: str, types: str, test: Callable[[str], str]) -> str:
        """The field is of one of the JSON `types` and its value passes `test(value SQL)`: true or false, never
        NULL. A declared field's column comes first, without coalesce(), so that the planner uses its index (the
        column IS NOT NULL term makes it definite instead). `test` binds its own values: it is called in order."""
        column = self.columns.get(path)
        if column is None:
            kind = f"json_type({self.column}, {self.bind(path)}) IN {types}"
            return self.definite(f"{kind} AND {test(f'json_extract({self.column}, {self.bind(path)})')}")
        value = f'd."{column}"'
        condition = test(value)
        return f"({value} IS NOT NULL AND {condition} AND json_type({self.column}, {self.bind(path)}) IN {types})"

    def any_of(self, path: str, values: list[Scalar]) -> str:
        """The field equals one of `values`: one membership test per JSON type, each over a single bound JSON
        array (json_each), so the SQL stays small however many values there are."""
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        texts = [v for v in values if isinstance(v, str)]
        parts = [
            self.typed(
                path,
                types,
                lambda field, group=group: f"{field} IN (SELECT value FROM json_each({self.bind(json.dumps(group))}))",
            )  # fmt: skip
            for types, group in ((NUMBER_TYPES, numbers), ("('text')", texts))
            if group
        ]
        parts += [
            self.definite(f"json_type({self.column}, {self.bind(path)}) = '{name}'")
            for name, constant in JSON_CONSTANTS
            if any(v is constant for v in values)
        ]
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"  # each part is definite

    def equals(self, path: str, value: Any, where: str) -> str:
        value = self.scalar(value, where)
        for name, constant in JSON_CONSTANTS:  # true, false and null are told apart by their JSON type alone
            if value is constant:
                return self.definite(f"json_type({self.column}, {self.bind(path)}) = '{name}'")
        types = NUMBER_TYPES if isinstance(value, int | float) else "('text')"
        return self.typed(path, types, lambda field: f"{field} = {self.bind(value)}")

    def scalar(self, value: Any, where: str) -> Scalar:
        if isinstance(value, list | dict):
            raise InvalidFilter(
                "values must be a string, number, boolean or null (arrays and objects are not compared)", where
            )
        if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
            raise InvalidFilter("integer out of the 64-bit range", where)
        if not isinstance(value, str | int | float | bool | type(None)):
            raise InvalidFilter("unsupported value", where)
        return value
