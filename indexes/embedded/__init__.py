"""The embedded engine (the default): one folder per index, SQLite (WAL) as the record, FAISS derived from it,
FTS5 for lexical search. The only package that imports FAISS."""
