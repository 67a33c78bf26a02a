"""The LangChain integration against a live server: LangChain's standard vector-store tests, then a small RAG
retrieval with the server's own model."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import openai
import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import VectorStoreIntegrationTests
from vsearch_client import Client
from vsearch_client.langchain import VsearchEmbeddings, VsearchVectorStore

_names = itertools.count()
FACTS = [
    ("paris", "Paris is the capital and largest city of France.", {"topic": "geography"}),
    ("nile", "The Nile is a major north-flowing river in northeastern Africa.", {"topic": "geography"}),
    ("python", "Python is a high-level programming language emphasising readability.", {"topic": "computing"}),
    ("sqlite", "SQLite is a small, fast, self-contained SQL database engine.", {"topic": "computing"}),
]


class TestStandardVectorStore(VectorStoreIntegrationTests):
    """LangChain's own tests (langchain-tests): sync and async, by id, idempotence, deletes."""

    @pytest.fixture()
    def vectorstore(self, server):
        name = f"lc-standard-{next(_names)}"
        yield VsearchVectorStore(name, url=server.url, embedding=self.get_embeddings())
        with Client(server.url) as client:
            client.delete_index(name, missing_ok=True)


def test_rag_retrieval_with_the_servers_model(server):
    store = VsearchVectorStore.from_texts(
        [text for _, text, _ in FACTS], metadatas=[meta for *_, meta in FACTS], ids=[i for i, *_ in FACTS],
        index="lc-rag", url=server.url,
    )  # fmt: skip
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert retriever.invoke("Which city is France's capital?") == [
        Document(id="paris", page_content=FACTS[0][1], metadata={"topic": "geography"})
    ]
    computing = store.as_retriever(search_kwargs={"k": 4, "filter": {"topic": "computing"}})
    assert {d.id for d in computing.invoke("a river in Africa")} == {"python", "sqlite"}  # the filter holds
    hybrid = VsearchVectorStore("lc-rag", url=server.url, mode="hybrid")
    assert hybrid.similarity_search("SQLite database", k=1)[0].id == "sqlite"
    scored = store.similarity_search_with_score("programming language", k=2)
    assert scored[0][0].id == "python" and scored[0][1] > scored[1][1]
    diverse = store.max_marginal_relevance_search("geography of France and Africa", k=2, lambda_mult=0.5)
    assert len({d.id for d in diverse}) == 2
    assert [d.id for d in asyncio.run(store.asimilarity_search("Which city is France's capital?", k=1))] == ["paris"]
    store.delete(filter={"topic": "geography"})
    assert [d.id for d in store.get_by_ids(["paris", "python"])] == ["python"]


def test_embeddings_match_the_openai_client(server):
    """VsearchEmbeddings sends text, never token ids: the vectors are the server's own."""
    texts = ["kitten", "A longer sentence about databases."]
    ours = VsearchEmbeddings(url=server.url).embed_documents(texts)
    direct = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x").embeddings.create(
        model="all-MiniLM-L6-v2", input=texts
    )
    assert np.allclose(ours, [d.embedding for d in direct.data], atol=1e-6)
    query = asyncio.run(VsearchEmbeddings(url=server.url).aembed_query("kitten"))
    assert np.allclose(query, ours[0], atol=1e-6)
