"""Metadata filters compiled for PostgreSQL: the same language and meaning as indexes/filters.py (the tests hold both
to one Python evaluation), over a JSONB column.

Equality is JSONB containment (`metadata @> '{"a": {"b": 7}}'`), which the column's GIN index serves; ordering and
`$in` compare vsearch_number() / vsearch_text() of the field (NULL for a field of another JSON type), which a
declared field's B-tree expression indexes serve. Strings compare in "C" collation: by code point, as in SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from psycopg.types.json import Jsonb

from indexes.filters import FilterCompiler, MetadataFilter, Scalar, ValueKind

# What vsearch_number()/vsearch_text() are; made with the schema (indexes/postgres/catalog.py).
FUNCTIONS = [
    "CREATE OR REPLACE FUNCTION vsearch_number(jsonb) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE "
    "AS $$ SELECT CASE WHEN jsonb_typeof($1) = 'number' THEN $1::numeric END $$",
    "CREATE OR REPLACE FUNCTION vsearch_text(jsonb) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
    "AS $$ SELECT CASE WHEN jsonb_typeof($1) = 'string' THEN $1 #>> '{}' END $$",
]


def path_parts(path: str) -> list[str]:
    """A path made by indexes.filters.json_path ('$."a"."b"') as its parts; parts never hold '"'."""
    return re.findall(r'"([^"]*)"', path)


def number_param(value: int | float) -> str:
    """A number as exact decimal text for a ::numeric parameter (a float8 parameter would round big integers)."""
    return repr(value) if isinstance(value, float) else str(value)


def field_value(column: str, parts: list[str]) -> str:
    """SQL for the field at `parts`, literal (the parts are validated, quotes doubled) so that a declared field's
    expression index matches it. A part that looks like an integer would index into an array with #>, which the
    filter language never does: such paths check that each parent is an object."""
    literal = "ARRAY[" + ",".join("'" + part.replace("'", "''") + "'" for part in parts) + "]::text[]"
    value = f"({column} #> {literal})"
    guarded = [i for i in range(1, len(parts)) if re.fullmatch(r"\s*[+-]?\d+\s*", parts[i])]
    if guarded:
        parents = " AND ".join(f"jsonb_typeof({field_value(column, parts[:i])}) = 'object'" for i in guarded)
        value = f"(CASE WHEN {parents} THEN {value} END)"
    return value


def nested(parts: list[str], value: Any) -> Any:
    for part in reversed(parts):
        value = {part: value}
    return value


class PgFilterCompiler(FilterCompiler):
    ALWAYS = "TRUE"

    def __init__(self, params: list[Any], column: str) -> None:
        super().__init__(params)
        self.column = column

    def bind(self, value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.params.append(number_param(value))
            return "%s::numeric"
        self.params.append(value)
        return "%s"

    def field_at(self, path: str) -> str:
        """The field's SQL inside a statement with parameters, where a '%' must be doubled."""
        return field_value(self.column, path_parts(path)).replace("%", "%%")

    def exists(self, path: str, present: bool) -> str:
        found = f"({self.field_at(path)} IS NOT NULL)"
        return found if present else f"(NOT {found})"

    def typed(self, path: str, kind: ValueKind, test: Callable[[str], str]) -> str:
        value = self.field_at(path)
        field = f"vsearch_number({value})" if kind == "number" else f'(vsearch_text({value}) COLLATE "C")'
        return f"({field} IS NOT NULL AND {test(field)})"  # false, not NULL, for another type or a missing field

    def any_of(self, path: str, values: list[Scalar]) -> str:
        numbers = [number_param(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        texts = [v for v in values if isinstance(v, str)]
        parts = []
        if numbers:
            self.params.append(numbers)
            parts.append(self.typed(path, "number", lambda field: f"{field} = ANY(%s::numeric[])"))
        if texts:
            self.params.append(texts)
            parts.append(self.typed(path, "text", lambda field: f"{field} = ANY(%s::text[])"))
        parts += [self.equals(path, constant) for constant in (True, False, None) if
                  any(v is constant for v in values)]  # fmt: skip
        return parts[0] if len(parts) == 1 else " OR ".join(parts)

    def equals(self, path: str, value: Scalar) -> str:
        # Containment is exact on scalars: 7 matches 7 and 7.0, never "7", true or [7] (arrays only match at the
        # top level), and true/false/null match only themselves.
        self.params.append(Jsonb(nested(path_parts(path), value)))
        return f"({self.column} @> %s)"


def compile_pg_filter(where: MetadataFilter, column: str) -> tuple[str, list[Any]]:
    """The filter as SQL over the JSONB `column`, and its parameters."""
    params: list[Any] = []
    return PgFilterCompiler(params, column).compile(where.root), params
