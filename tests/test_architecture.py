"""The layering rules of docs/architecture.md, checked on the import graph (read with ast, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTTP_MODULES = ("service.api", "service.app")  # the HTTP layer: may use the web framework
WEB_FRAMEWORKS = ("litestar", "uvicorn", "starlette")
WIRE_SCHEMAS = "service.schemas"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (imports inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted((ROOT / package).rglob("*.py"))}


def within(name: str, *packages: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def test_the_rules_see_every_module():
    service, indexes = modules("service"), modules("indexes")
    assert "service.api.edge" in service and "service.search.service" in service and "indexes.embedded.store" in indexes
    assert any(within(name, "indexes") for name in service["service.search.service"])  # the walker finds imports


def test_the_two_engines_never_import_each_other():
    engines = {"indexes.embedded": "indexes.postgres", "indexes.postgres": "indexes.embedded"}
    for module, imported in modules("indexes").items():
        for engine, other in engines.items():
            if within(module, engine):
                assert not [name for name in imported if within(name, other)], module


def test_nothing_outside_the_embedded_engine_imports_faiss():
    for package in ("indexes", "service"):
        for module, imported in modules(package).items():
            if not within(module, "indexes.embedded"):
                assert "faiss" not in imported, module


def test_database_helpers_are_shared_not_engine_parts():
    """The service's stores reach SQLite and PostgreSQL through indexes/databases/, never through an engine."""
    for module, imported in modules("service").items():
        assert not [name for name in imported if within(name, "indexes.postgres.database", "indexes.sqlite")], module
        if within(module, "service.finetune", "service.embeddings"):
            assert not [name for name in imported if within(name, "indexes.embedded", "indexes.postgres")], module


def test_no_class_is_over_350_lines():
    for package in ("indexes", "service"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    assert lines <= 350, f"{path.relative_to(ROOT)}: class {node.name} has {lines} lines"


def test_the_storage_engine_never_imports_the_service():
    for module, imported in modules("indexes").items():
        assert not [name for name in imported if within(name, "service")], module


def test_the_http_layer_never_imports_the_storage_engine():
    for module, imported in modules("service").items():
        if within(module, *HTTP_MODULES):
            assert not [name for name in imported if within(name, "indexes")], module


@pytest.mark.parametrize("forbidden", [WEB_FRAMEWORKS, HTTP_MODULES, (WIRE_SCHEMAS,)])
def test_the_domain_knows_nothing_of_http(forbidden):
    """Outside the HTTP layer (and the CLI, which starts the server), no module imports the web framework, the
    HTTP layer, or the wire schemas."""
    for module, imported in modules("service").items():
        if within(module, *HTTP_MODULES, WIRE_SCHEMAS, "service.cli"):
            continue
        assert not [name for name in imported if within(name, *forbidden)], module


def test_only_the_cli_starts_a_server():
    for module, imported in modules("service").items():
        if "uvicorn" in imported:
            assert module == "service.cli", module


def test_both_engines_keep_the_storage_contract():
    """Every method of indexes/contract.py's Protocols exists on both engines with the same parameters."""
    import inspect

    from indexes.contract import CatalogContract, IndexStoreContract
    from indexes.embedded.catalog import IndexCatalog
    from indexes.embedded.store import IndexStore
    from indexes.postgres.catalog import PgCatalog
    from indexes.postgres.store import PgIndexStore

    pairs = [(IndexStoreContract, IndexStore), (CatalogContract, IndexCatalog), (IndexStoreContract, PgIndexStore),
             (CatalogContract, PgCatalog)]  # fmt: skip
    for contract, engine in pairs:
        for name, member in vars(contract).items():
            if name.startswith("_") or not callable(member):
                continue
            wanted = list(inspect.signature(member).parameters)
            assert list(inspect.signature(getattr(engine, name)).parameters) == wanted, (engine.__name__, name)
