"""Natural-language queries: catalogue search, requests in words, conversations, LLM backends.

Every query enters through :meth:`~avrec.language.search.SearchIndex.search`,
:meth:`~avrec.language.ask.Asker.ask` (and ``parse``) or
:meth:`~avrec.language.conversation.Conversation.turn`, and each cuts it to
:data:`MAX_QUERY_CHARS` with :func:`clip_query`: a 100,000-character query took 21-56 s and
600 MB and was echoed back whole (issue #16), and a request in words is never that long.
"""

from __future__ import annotations

__all__ = ["MAX_QUERY_CHARS", "clip_query"]

#: the most characters of a query that are read; the rest is left out
MAX_QUERY_CHARS = 1000

# how far back from the cut a space is looked for, so that the last word is not cut in two
_WORD_BACK = 40


def clip_query(query: str) -> tuple[str, bool]:
    """``query`` cut to :data:`MAX_QUERY_CHARS` characters, and whether it was cut.

    The cut goes back to the last space when one is near (so no word is read half), and
    the kept part is stripped of trailing space.
    """
    if len(query) <= MAX_QUERY_CHARS:
        return query, False
    kept = query[:MAX_QUERY_CHARS]
    if not query[MAX_QUERY_CHARS].isspace():
        space = max(kept.rfind(" "), kept.rfind("\n"), kept.rfind("\t"))
        if space >= MAX_QUERY_CHARS - _WORD_BACK:
            kept = kept[:space]
    return kept.rstrip(), True
