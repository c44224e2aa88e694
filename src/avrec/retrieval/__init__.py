"""Retrieval: vector indexes (FAISS) and, later, candidate sources."""

from avrec.retrieval.index import SearchResult, VectorIndex

__all__ = ["SearchResult", "VectorIndex"]
