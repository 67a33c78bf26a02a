"""The LlamaIndex integration against a live server: a small RAG retrieval end to end, filters, deletes."""

from __future__ import annotations

import asyncio

import numpy as np
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from vsearch_client import Client
from vsearch_client.llamaindex import VsearchEmbedding, VsearchVectorStore, vsearch_filter

FACTS = [
    ("paris", "Paris is the capital and largest city of France.", {"topic": "geography", "year": 2001}),
    ("nile", "The Nile is a major north-flowing river in northeastern Africa.", {"topic": "geography", "year": 1999}),
    ("python", "Python is a high-level programming language emphasising readability.", {"topic": "computing",
                                                                                        "year": 2020}),
    ("sqlite", "SQLite is a small, fast, self-contained SQL database engine.", {"topic": "computing", "year": 2010}),
]  # fmt: skip


def test_filters_map_to_vsearch_filters():
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="computing"),
            MetadataFilters(
                filters=[MetadataFilter(key="year", value=2015, operator=FilterOperator.GTE),
                         MetadataFilter(key="year", value=[1999], operator=FilterOperator.IN)],
                condition=FilterCondition.OR,
            ),
        ]
    )  # fmt: skip
    assert vsearch_filter(filters) == {
        "$and": [{"topic": {"$eq": "computing"}}, {"$or": [{"year": {"$gte": 2015}}, {"year": {"$in": [1999]}}]}]
    }


def test_rag_retrieval_end_to_end(server):
    store = VsearchVectorStore(index="li-rag", url=server.url)
    embed = VsearchEmbedding(url=server.url)
    documents = [Document(id_=doc_id, text=text, metadata=meta) for doc_id, text, meta in FACTS]
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    best = index.as_retriever(similarity_top_k=1).retrieve("Which city is France's capital?")
    assert best[0].node.get_content() == FACTS[0][1] and best[0].node.ref_doc_id == "paris"
    computing = MetadataFilters(filters=[MetadataFilter(key="topic", value="computing")])
    found = index.as_retriever(similarity_top_k=4, filters=computing).retrieve("a river in Africa")
    assert {n.node.ref_doc_id for n in found} == {"python", "sqlite"}
    question = embed.get_query_embedding("SQL database engine")
    hybrid = store.query(VectorStoreQuery(query_embedding=question, query_str="SQLite database", similarity_top_k=1,
                                          mode=VectorStoreQueryMode.HYBRID))  # fmt: skip
    assert hybrid.nodes[0].ref_doc_id == "sqlite"
    diverse = store.query(VectorStoreQuery(query_embedding=question, similarity_top_k=2, mode=VectorStoreQueryMode.MMR,
                                           mmr_threshold=0.5))  # fmt: skip
    assert len(diverse.nodes) == 2
    later = asyncio.run(store.aquery(VectorStoreQuery(query_embedding=question, similarity_top_k=1)))
    assert later.nodes[0].ref_doc_id == "sqlite"
    assert np.allclose(asyncio.run(embed.aget_query_embedding("SQL database engine")), question, atol=1e-6)
    index.delete_ref_doc("sqlite")
    after = store.query(VectorStoreQuery(query_embedding=question, similarity_top_k=4))
    assert "sqlite" not in {n.ref_doc_id for n in after.nodes} and len(after.nodes) == 3
    with Client(server.url) as client:
        client.delete_index("li-rag")
