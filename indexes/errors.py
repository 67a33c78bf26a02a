"""Errors of the storage engine. They carry no HTTP: the service maps each type to a status in one place."""

from __future__ import annotations


class IndexStoreError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class IndexNotFound(IndexStoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"No index named '{name}'.", "name")


class IndexReplaced(IndexNotFound):
    """The index a store was lent for has been replaced by a restore: acquire it again to reach the new one."""

    def __init__(self, name: str) -> None:  # noqa: B042 (the message differs from IndexNotFound's)
        IndexStoreError.__init__(
            self, f"Index '{name}' was restored from a snapshot meanwhile; retry to use the restored index.", "name"
        )


class IndexExists(IndexStoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"An index named '{name}' already exists.", "name")


class IndexUnavailable(IndexStoreError):
    """The index exists but cannot be opened now (out of file descriptors, or damaged): the others still work."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"Index '{name}' cannot be opened: {reason}", "name")


class DocumentNotFound(IndexStoreError):
    def __init__(self, doc_id: str) -> None:
        super().__init__(f"No document with id '{doc_id}'.", "id")


class InvalidConfig(IndexStoreError):
    pass


class InvalidFilter(IndexStoreError):
    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"Invalid filter at '{path}': {message}", "filter")
        self.path = path


class InvalidDocument(IndexStoreError):
    pass


class StorageUnavailable(IndexStoreError):
    """The database behind the store (PostgreSQL) cannot be reached, or did not answer in time: retry later."""


class InvalidSnapshot(IndexStoreError):
    """A snapshot file that cannot be restored (damaged, truncated, another format version, or not a snapshot):
    nothing was changed."""


class SchemaTooNew(IndexStoreError):
    """A database written by a newer vsearch: its layout is not guessed at (an older version must not write it)."""

    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(
            f"{where} has schema version {found}, newer than this vsearch knows ({known}): upgrade vsearch to use it."
        )


class BlockingCallOnLoop(RuntimeError):
    """Storage was touched on a thread that runs an event loop: a bug (the caller must go through the database's
    run(), which moves the work to a worker thread)."""
