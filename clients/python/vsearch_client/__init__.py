"""vsearch-client: typed sync and async access to a vsearch server.

from vsearch_client import Client
client = Client("http://127.0.0.1:8000")
client.create_index("docs")
client.add_documents("docs", [{"id": "a", "text": "The cat sat on the mat"}])
hits = client.query("docs", "kitten", top_k=5)
"""

from vsearch_client._client import AsyncClient, Client
from vsearch_client.errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerUnavailable,
    VsearchError,
)
from vsearch_client.types import AddResult, DeleteResult, Document, DocumentPage, Hit, Index

__all__ = [
    "AddResult", "AsyncClient", "AuthenticationError", "BadRequest", "Client", "Conflict", "DeleteResult", "Document",
    "DocumentPage", "Hit", "Index", "NotFound", "PermissionDenied", "RateLimited", "ServerUnavailable",
    "VsearchError",
]  # fmt: skip
