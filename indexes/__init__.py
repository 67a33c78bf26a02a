"""Storage, behind a written contract (contract.py); no HTTP here, and nothing of service/.

Shared by both engines at this level: the contract, the value types (values.py), the dialect-neutral filter
(filters.py), ranking and the search steps (ranking.py, searching.py), lexical query words (text.py), config and
errors. One package per engine side by side: embedded/ (SQLite + FAISS, the default) and postgres/ (PostgreSQL +
pgvector); they never import each other. databases/ holds one helper per backend (SQLite, PostgreSQL), with the
async boundary and the schema version, used by the engines and by the service's job, file, adapter and cache stores.
"""
