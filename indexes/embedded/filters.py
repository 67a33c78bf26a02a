"""The filter language (indexes/filters.py) compiled for SQLite: a boolean expression over the documents table `d`,
its JSON metadata read with json_type()/json_extract(), and a declared field's generated column used where there
is one, so that SQLite finds the matches through its B-tree."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from indexes.filters import FilterCompiler, MetadataFilter, Scalar, ValueKind, json_path, kind_of

SQL_TYPES = {"number": "('integer', 'real')", "text": "('text')"}
JSON_CONSTANTS = (("true", True), ("false", False), ("null", None))


class SqlFilter(msgspec.Struct, frozen=True):
    """A filter compiled for one index: `sql` over `d` (documents), `params` its bound values."""

    sql: str
    params: tuple[Any, ...]


def index_column(field: str) -> str:
    """The generated column (and, with the prefix mi_, the index) that holds a declared field's value."""
    return "m_" + hashlib.sha1(field.encode()).hexdigest()[:16]


def compile_sqlite(where: MetadataFilter, declared: Iterable[str] = ()) -> SqlFilter:
    """`declared`: the index's metadata fields with a column and a B-tree of their own, which comparisons on them
    use; the results are the same either way."""
    params: list[Any] = []
    columns = {json_path(field): index_column(field) for field in declared}
    return SqlFilter(SqliteFilterCompiler(params, columns).compile(where.root), tuple(params))


def definite(condition: str) -> str:
    """A missing field makes json_type() NULL, and SQL's NULL would turn NOT(...) into 'unknown': make every leaf
    true or false."""
    return f"coalesce(({condition}), 0)"


class SqliteFilterCompiler(FilterCompiler):
    ALWAYS = "1"
    COLUMN = "d.metadata"

    def __init__(self, params: list[Any], columns: dict[str, str]) -> None:
        super().__init__(params)
        self.columns = columns  # JSON path -> generated column, for declared fields

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def exists(self, path: str, present: bool) -> str:
        return f"(json_type({self.COLUMN}, {self.bind(path)}) IS {'NOT ' if present else ''}NULL)"

    def typed(self, path: str, kind: ValueKind, test: Callable[[str], str]) -> str:
        """A declared field's column comes first, without coalesce(), so that the planner uses its index (the
        column IS NOT NULL term makes it definite instead). `test` binds its own values: it is called in order."""
        types = SQL_TYPES[kind]
        column = self.columns.get(path)
        if column is None:
            typed = f"json_type({self.COLUMN}, {self.bind(path)}) IN {types}"
            return definite(f"{typed} AND {test(f'json_extract({self.COLUMN}, {self.bind(path)})')}")
        value = f'd."{column}"'
        condition = test(value)
        return f"({value} IS NOT NULL AND {condition} AND json_type({self.COLUMN}, {self.bind(path)}) IN {types})"

    def any_of(self, path: str, values: list[Scalar]) -> str:
        """One membership test per JSON type, each over a single bound JSON array (json_each), so the SQL stays
        small however many values there are."""
        groups = {"number": [v for v in values if kind_of(v) == "number"],
                  "text": [v for v in values if isinstance(v, str)]}  # fmt: skip
        parts = [self.typed(path, kind, lambda field, group=group: f"{field} IN {self.each(group)}")
                 for kind, group in groups.items() if group]  # fmt: skip
        parts += [self.constant(path, name) for name, constant in JSON_CONSTANTS if any(v is constant for v in values)]
        return parts[0] if len(parts) == 1 else " OR ".join(parts)  # each part is definite

    def each(self, values: list[Scalar]) -> str:
        return f"(SELECT value FROM json_each({self.bind(json.dumps(values))}))"

    def constant(self, path: str, name: str) -> str:
        return definite(f"json_type({self.COLUMN}, {self.bind(path)}) = '{name}'")

    def equals(self, path: str, value: Scalar) -> str:
        for name, constant in JSON_CONSTANTS:  # true, false and null are told apart by their JSON type alone
            if value is constant:
                return self.constant(path, name)
        return self.typed(path, kind_of(value), lambda field: f"{field} = {self.bind(value)}")
