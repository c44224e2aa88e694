"""Conversations: requests in words that refine one another.

"comedies from the 90s" -> "more like the second one" -> "shorter, and not that one". Each turn
is read against the state the conversation keeps (:class:`ConversationState`): the constraints
so far, the description, the items liked and rejected, and the list last shown, so that

- **references** to the last list are resolved: "the second one", "the last one", "that one"
  (the first shown, or the one referred to before), "第二个", "最后一个", "这个";
- **"more like X"** / "像第二个那样" adds X to the liked items (the next answer resembles it);
- **"not that one"** / "不要这个" rejects X (never shown again);
- **relative constraints** compare with the items shown: "shorter" / "短一点" caps the duration
  below the referenced item's (or the shown items' median), "longer" the other way, "newer" /
  "older" move the years;
- anything else is read by :class:`~avrec.language.query.QueryParser` and merged onto the
  constraints so far (a new bound replaces the old one; genres accumulate).

The state is stored in the workspace store (``kind = "conversation"``) with an expiry, so a
conversation survives between CLI calls and service requests, and ends by itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avrec.language import MAX_QUERY_CHARS, clip_query
from avrec.language.ask import Asker, AskResult
from avrec.language.query import Constraints

__all__ = ["Conversation", "ConversationState"]

_ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
    "fifth": 4, "5th": 4, "sixth": 5, "seventh": 6, "eighth": 7, "ninth": 8, "tenth": 9,
}  # fmt: skip
_ZH_ORDINALS = {
    "一": 0,
    "二": 1,
    "三": 2,
    "四": 3,
    "五": 4,
    "六": 5,
    "七": 6,
    "八": 7,
    "九": 8,
    "十": 9,
}

_EN_REF = (
    r"\b(?:the\s+)?(?P<ord>first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|sixth|seventh|"
    r"eighth|ninth|tenth|last)(?:\s+(?:one|item|video|film|movie|song|track))?\b"
    r"|\b(?:number|#)\s*(?P<num>\d+)\b"
    r"|\b(?P<that>that one|this one|that|this|it)\b"
)
_ZH_REF = (
    r"第(?P<zord>[一二三四五六七八九十\d]+)个|(?P<zlast>最后一个)"
    r"|(?P<zthat>这个|那个|这部|那部|这首|那首)"
)
_MORE_LIKE = r"\b(?:more\s+like|like|similar\s+to|something\s+like)\s*$"
_ZH_MORE_LIKE = r"(?:像|类似|和|跟)\s*$"
_NOT = r"\b(?:not|no|never|without|except|skip|drop|hide)\s*$"
_ZH_NOT = r"(?:不要|不是|别|除了|不喜欢)\s*$"


class ConversationState(BaseModel):
    """What a conversation keeps between turns."""

    model_config = ConfigDict(extra="forbid")

    id: str
    user: str | None = None
    text: str = ""
    constraints: Constraints = Field(default_factory=Constraints)
    liked: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    shown: list[str] = Field(default_factory=list, description="the list last shown")
    focus: str | None = Field(None, description="the item last referred to")
    turns: list[str] = Field(default_factory=list)


class Conversation:
    """Multi-turn requests over an :class:`~avrec.language.ask.Asker`.

    Args:
        asker: answers each turn.
        store: where states are kept (``put_state``/``get_state``); ``None``: in memory.
        ttl_s: how long a conversation lives after its last turn.
    """

    KIND = "conversation"

    def __init__(self, asker: Asker, store: Any = None, ttl_s: float = 3600.0) -> None:
        self.asker = asker
        self.store = store
        self.ttl_s = ttl_s
        self._memory: dict[str, dict] = {}

    def state(self, conversation_id: str, user: str | None = None) -> ConversationState:
        """The conversation's state (a new one when it is unknown or expired)."""
        raw = (
            self.store.get_state(self.KIND, conversation_id)
            if self.store is not None
            else self._memory.get(conversation_id)
        )
        if raw is None:
            return ConversationState(id=conversation_id, user=user)
        return ConversationState.model_validate(raw)

    def _save(self, st: ConversationState) -> None:
        data = st.model_dump(mode="json")
        if self.store is not None:
            self.store.put_state(self.KIND, st.id, data, ttl_s=self.ttl_s)
        else:
            self._memory[st.id] = data

    # -- one turn --------------------------------------------------------------------------
    def turn(
        self,
        conversation_id: str,
        query: str,
        user: str | None = None,
        k: int = 10,
        lang: str | None = None,
        user_words: Sequence[str] = (),
    ) -> AskResult:
        """Answer ``query`` in the conversation (started when new) and remember the turn.

        A turn over :data:`~avrec.language.MAX_QUERY_CHARS` is cut to that length, and so is
        the description the turns add up to (its latest words kept).
        """
        query, truncated = clip_query(query)
        st = self.state(conversation_id, user)
        if user is not None:
            st.user = user
        rest = self._references(query, st)
        rest = self._relative(rest, st)
        parsed = self.asker.parse(rest)
        st.constraints = st.constraints.merged(parsed.constraints)
        if parsed.text.strip() and not _only_glue(parsed.text):
            st.text = parsed.text if not st.text else f"{st.text} {parsed.text}"
            if len(st.text) > MAX_QUERY_CHARS:  # the latest refinements count
                st.text = st.text[-MAX_QUERY_CHARS:].split(" ", 1)[-1].strip()
        res = self.asker.ask(
            st.text,
            user=st.user,
            k=k,
            constraints=st.constraints,
            exclude=st.rejected,
            liked=st.liked,
            lang=lang,
            user_words=user_words,
        )
        st.shown = list(res.items.ids)
        st.turns.append(query)
        self._save(st)
        return AskResult(parsed, st.constraints, res.items, query, truncated)

    def _references(self, query: str, st: ConversationState) -> str:
        """Resolve "the second one" (and the like) against the list last shown: liked after
        "more like", rejected after "not"; the rest of the text comes back."""
        text = f" {query} "
        while True:
            m = re.search(_EN_REF, text, re.I) or re.search(_ZH_REF, text)
            if m is None:
                break
            item = self._item_for(m, st)
            before = text[: m.start()]
            if item is None:  # "it" with nothing shown: just a word
                text = before + " " + text[m.end() :]
                continue
            st.focus = item
            if re.search(_NOT, before, re.I) or re.search(_ZH_NOT, before):
                if item not in st.rejected:
                    st.rejected.append(item)
                st.liked = [x for x in st.liked if x != item]
                before = re.sub(_NOT, " ", before, flags=re.I)
                before = re.sub(_ZH_NOT, " ", before)
            elif re.search(_MORE_LIKE, before, re.I) or re.search(_ZH_MORE_LIKE, before):
                if item not in st.liked:
                    st.liked.append(item)
                before = re.sub(_MORE_LIKE, " ", before, flags=re.I)
                before = re.sub(_ZH_MORE_LIKE, " ", before)
            text = before + " " + text[m.end() :]
        return text.strip()

    def _item_for(self, m: re.Match, st: ConversationState) -> str | None:
        shown = st.shown
        g = m.groupdict()
        pos: int | None = None
        if g.get("ord"):
            word = g["ord"].lower()
            pos = len(shown) - 1 if word == "last" else _ORDINALS[word]
        elif g.get("num"):
            pos = int(g["num"]) - 1
        elif g.get("zord"):
            z = g["zord"]
            pos = int(z) - 1 if z.isdigit() else _ZH_ORDINALS.get(z)
        elif g.get("zlast"):
            pos = len(shown) - 1
        elif g.get("that") or g.get("zthat"):
            return st.focus or (shown[0] if shown else None)
        if pos is None or not 0 <= pos < len(shown):
            return None
        return shown[pos]

    def _relative(self, text: str, st: ConversationState) -> str:
        """ "shorter", "longer", "newer", "older" (and Chinese) against the items shown."""
        facts = self.asker.pipeline.facts
        ref = [st.focus] if st.focus else st.shown
        idx = self.asker.pipeline.items.index([x for x in ref if x], missing="ignore")
        idx = idx[idx >= 0]
        rules = (
            (r"\bshorter\b|短一点|短一些|更短", "duration", "max"),
            (r"\blonger\b|长一点|长一些|更长", "duration", "min"),
            (r"\b(?:newer|more recent)\b|新一点|更新", "year", "min"),
            (r"\bolder\b|老一点|更老|更早", "year", "max"),
        )
        for pat, field, side in rules:
            m = re.search(pat, text, re.I)
            if m is None:
                continue
            text = text[: m.start()] + " " + text[m.end() :]
            values = getattr(facts, field)[idx] if len(idx) else np.zeros(0)
            values = values[np.isfinite(values)]
            if not len(values):
                continue
            v = float(np.median(values))
            c = st.constraints
            if field == "duration" and side == "max":
                c.max_duration = 0.75 * v
            elif field == "duration":
                c.min_duration = 1.25 * v
            elif side == "min":
                c.year_from = int(v) + 1
            else:
                c.year_to = int(v) - 1
        return text.strip()


def _only_glue(text: str) -> bool:
    """Whether ``text`` is only connecting words ("but", "and", "please", "还有")."""
    glue = {"but", "and", "please", "something", "anything", "one", "ones", "a", "an", "the",
            "more", "less", "bit", "little", "also", "too", "then", "with", "of", "some",
            "还有", "一些", "再", "吧", "请", "的", "要", "而且", "但是"}  # fmt: skip
    words = re.findall(r"[\w']+", text.lower())
    return all(w in glue for w in words)
