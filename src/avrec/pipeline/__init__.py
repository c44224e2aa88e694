"""The recommendation pipeline: candidate sources, merging, ranking, re-ranking, explanations."""

from avrec.pipeline.sources import SOURCES, Candidates, Request, Source, create_source

__all__ = ["SOURCES", "Candidates", "Request", "Source", "create_source"]
