"""The storage engine: one folder per index, SQLite as the record and FAISS derived from it. No HTTP here."""
