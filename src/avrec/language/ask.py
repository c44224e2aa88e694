"""Recommendations for a request in words: "我喜欢节奏感强的电子音乐", "a funny cat video, under a
minute", "comedies from the 90s but not romance".

:class:`Asker` parses the request (:class:`~avrec.language.query.QueryParser`: description and
constraints), turns the constraints into a filter (genres wanted and unwanted, language,
duration, years) and a mask (words the items must not contain), finds candidates that match
the description (:class:`~avrec.language.search.SearchIndex`: keyword and meaning, fused) or
resemble a title it names, and hands them to the pipeline
(:meth:`~avrec.pipeline.pipeline.Pipeline.rank_given`): blended with what the pipeline knows of
the person (``personal_weight``; none for anonymous users), re-ranked and explained like any
recommendation, with what the request matched first among the reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avrec.content.text import guess_script_language
from avrec.errors import ConfigError
from avrec.language import clip_query
from avrec.language.grounding import Grounds, Lexicon, check_sentence
from avrec.language.query import ZH_LABELS, Constraints, ParsedQuery, QueryParser
from avrec.language.search import SearchIndex
from avrec.models.base import ItemList
from avrec.pipeline.explain import Reason
from avrec.pipeline.filters import ItemFilter

__all__ = ["AskResult", "Asker", "constraint_filter", "sentence_counts"]

log = logging.getLogger(__name__)


@dataclass
class AskResult:
    """The answer to one request: the parsed request, the constraints in force (this turn's
    merged onto a conversation's), the items, and the request as read (cut to
    :data:`~avrec.language.MAX_QUERY_CHARS`; ``query_truncated`` says whether it was)."""

    parsed: ParsedQuery
    constraints: Constraints
    items: ItemList
    query: str = ""
    query_truncated: bool = False

    @property
    def llm_sentences(self) -> dict[str, int]:
        """How many LLM sentences the explanations show and how many were rejected."""
        return sentence_counts(self.items)


def sentence_counts(items: ItemList) -> dict[str, int]:
    """``{"shown": n, "rejected": m}``: the explanations an LLM's sentence is shown in
    (``"by": "llm"``) and those where its sentence was rejected (``"llm_rejected"``)."""
    exps = [e or {} for e in items.fields.get("explanation", [])]
    return {
        "shown": sum(e.get("by") == "llm" for e in exps),
        "rejected": sum("llm_rejected" in e for e in exps),
    }


def constraint_filter(c: Constraints) -> ItemFilter:
    """The pipeline filter for ``c`` (words to leave out are a separate mask)."""
    return ItemFilter(
        categories=c.include or None,
        languages=c.languages or None,
        min_duration=c.min_duration,
        max_duration=c.max_duration,
        exclude_categories=c.exclude or None,
        year_from=c.year_from,
        year_to=c.year_to,
    )


class Asker:
    """Requests in words -> personalised, explained recommendations.

    Args:
        pipeline: a fitted :class:`~avrec.pipeline.pipeline.Pipeline` with a search index
            (``pipeline.search``), or pass ``search``.
        personal_weight: how much the person's own profile counts against the request's
            relevance (0: the request alone).
        depth: how many matching items are ranked for each request.
        title_match: how close (rapidfuzz ratio, 0-100) a title named in the request must be
            to a catalogue title ("like Toy Stroy") to count as that item.
        semantic_margin: meaning matches count as candidates within this much cosine of the
            best one (keyword and title matches always do).
        llm: a :class:`~avrec.language.llm.LanguageModel` that reads the request's
            constraints first (the rules when it gives nothing valid) and, for the first
            ``llm_explain`` items, writes the explanation's sentence: shown only when it
            passes :func:`~avrec.language.grounding.check_sentence` against the item's own
            facts, and only by a model that passed its start-up grounding check.
        llm_rerank: for a person with at most ``short_history`` events, the LLM re-orders
            this many of the first items (0: never); a failed call keeps the order.
    """

    def __init__(
        self,
        pipeline: Any,
        search: SearchIndex | None = None,
        personal_weight: float = 0.3,
        depth: int = 200,
        title_match: float = 85.0,
        semantic_margin: float = 0.06,
        llm: Any = None,
        llm_explain: int = 0,
        llm_rerank: int = 0,
        short_history: int = 3,
    ) -> None:
        self.pipeline = pipeline
        self.search = search if search is not None else getattr(pipeline, "search", None)
        if self.search is None:
            raise ConfigError("asking needs the pipeline's search index: train the pipeline again")
        if not 0.0 <= personal_weight <= 1.0:
            raise ConfigError(f"personal_weight must be in [0, 1], got {personal_weight}")
        self.personal_weight = personal_weight
        self.depth = depth
        self.title_match = title_match
        self.semantic_margin = semantic_margin
        self.llm = llm
        self.llm_explain = llm_explain
        self.llm_rerank = llm_rerank
        self.short_history = short_history
        self._lexicon: Lexicon | None = None  # the catalogue's names, built when first needed
        # the catalogue's genres and tags, lower case (filters match them in any case)
        facts = pipeline.facts
        self.parser = QueryParser(facts.genres, self.find_title, tags=facts.by_label)

    # -- parts ---------------------------------------------------------------------------------
    def find_title(self, text: str) -> str | None:
        """The id of the item whose title is ``text`` (typos allowed), or ``None``."""
        from rapidfuzz import fuzz

        from avrec.language.search import _title_key

        found = self.search.title(text, 1)
        if not len(found):
            return None
        item = int(found[0])
        if fuzz.ratio(_title_key(text), self.search.title_keys[item]) < self.title_match:
            return None
        return str(self.pipeline.items.lookup([item])[0])

    def parse(self, query: str) -> ParsedQuery:
        """The request's description and constraints.

        The rules' answer always stands. A configured LLM may add what the rules left empty,
        and only what the request grounds (after its JSON passed the schema): genres the
        catalogue has, languages by their codes, a duration or year only when the request
        names a number, an unwanted word only when the request says "not" before it, titles
        that resolve to items. SmolLM2-135M, the offline default, answered "relaxing piano
        music under 10 minutes" with 10-second bounds and the language "music": small models
        add, they do not overrule.

        A request over :data:`~avrec.language.MAX_QUERY_CHARS` is cut to that length.
        """
        query = clip_query(query)[0]
        rules = self.parser.parse(query)
        if self.llm is None:
            return rules
        got = self.llm.constraints(query, sorted(self.pipeline.facts.by_label)[:60])
        if got is None:
            return rules
        return ParsedQuery(text=rules.text, constraints=self._grounded(query, rules, got))

    def _grounded(self, query: str, rules: ParsedQuery, llm: ParsedQuery) -> Constraints:
        import re

        from avrec.language.query import LANGUAGES

        c = rules.constraints.model_copy(deep=True)
        g = llm.constraints
        q = query.lower()
        numbers = {float(x) for x in re.findall(r"\d+(?:\.\d+)?", q)}
        if c.min_duration is None and c.max_duration is None and numbers:
            allowed = {n * unit for n in numbers for unit in (1, 60, 3600)}
            lo, hi = g.min_duration, g.max_duration
            if lo in allowed or hi in allowed:
                if lo is None or hi is None or lo <= hi:
                    c.min_duration = lo if lo in allowed else None
                    c.max_duration = hi if hi in allowed else None
        if c.year_from is None and c.year_to is None:
            years = {int(n) for n in numbers if 1800 <= n <= 2200}
            if g.year_from in years or g.year_to in years:
                c.year_from = g.year_from if g.year_from in years else None
                c.year_to = g.year_to if g.year_to in years else None
                if c.year_from and c.year_to and c.year_to < c.year_from:
                    c.year_from = c.year_to = None
        if not c.languages:
            c.languages = [x for x in g.languages if x in set(LANGUAGES.values())][:3]
        known = self.pipeline.facts.by_label
        for name in ("include", "exclude"):
            have = getattr(c, name)
            add = [x.lower() for x in getattr(g, name) if x.lower() in known]
            setattr(c, name, list(dict.fromkeys([*have, *add])))
        c.include = [x for x in c.include if x not in c.exclude]
        neg = r"(?:\b(?:not|no|without|except|but not)\b|不要|不是|别|除了)"
        for w in g.exclude_words:
            w = w.strip().lower()
            if w and w not in c.exclude_words and re.search(neg + r".{0,15}" + re.escape(w), q):
                c.exclude_words.append(w)
        for t in g.like:
            found = self.find_title(t)
            if found and found not in c.like:
                c.like.append(found)
        return c

    def _word_mask(self, words: Sequence[str]) -> np.ndarray | None:
        """False for items whose words include any of ``words``."""
        if not words:
            return None
        ok = np.ones(self.search.n_items, bool)
        for w in words:
            ok[self.search.keyword(w, self.search.n_items)] = False
        return ok

    def _keyword_text(self, text: str) -> str:
        """The text for keyword search: Chinese genre and topic words get their English
        label beside them (a catalogue written in English still matches "猫")."""
        extra = [en if isinstance(en, str) else en[0] for zh, en in ZH_LABELS.items() if zh in text]
        return " ".join([text, *extra])

    # -- the request ---------------------------------------------------------------------------
    def ask(
        self,
        query: str,
        user: str | None = None,
        k: int = 10,
        offset: int = 0,
        constraints: Constraints | None = None,
        exclude: Sequence[str] = (),
        liked: Sequence[str] = (),
        session_items: Sequence[str] | None = None,
        lang: str | None = None,
        diversity: float = 0.0,
        weight: float | None = None,
        user_words: Sequence[str] = (),
    ) -> AskResult:
        """Recommendations for ``query``, for ``user`` (``None``: anonymous).

        ``constraints`` are earlier ones (a conversation's) that this request refines;
        ``exclude`` are items not to show again; ``liked`` items steer like a "like <title>";
        ``lang`` the explanations' language (default: the request's script);
        ``user_words`` the person's own words from the log (past searches, comments): the
        candidates closest to them in meaning count as closer to the person.
        A request over :data:`~avrec.language.MAX_QUERY_CHARS` is cut to that length (the
        result's ``query`` and ``query_truncated`` say so).

        Raises:
            ConfigError: ``k`` is not positive.
        """
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        query, truncated = clip_query(query)
        parsed = self.parse(query)
        c = (constraints or Constraints()).merged(parsed.constraints)
        lang = lang or guess_script_language(query) or "en"
        flt = constraint_filter(c)
        words = self._word_mask(c.exclude_words)
        allowed = self.pipeline.facts.mask(flt, self.pipeline.features.timeline.now)
        if words is not None:
            allowed = words if allowed is None else (allowed & words)
        items, relevance, reasons = self._candidates(parsed.text, [*c.like, *liked], allowed)
        w = self.personal_weight if weight is None else weight
        if not len(items):
            # constraints alone ("comedies from the 90s"): the popular items that pass, and
            # the person's taste counts most
            items, relevance = self._popular(allowed)
            w = max(w, 0.8)
        out = self.pipeline.rank_given(
            user,
            items,
            relevance,
            weight=w,
            k=k,
            offset=offset,
            exclude=list(exclude),
            exclude_seen=True,
            diversity=diversity,
            lang=lang,
            session_items=session_items,
            filters=flt,
            allowed=words,
            reasons=reasons,
            affinity=self._affinity(items, user_words),
        )
        if self.llm is not None and self.llm_rerank:
            self._llm_order(out, user, session_items)
        if self.llm is not None and self.llm_explain:
            self._llm_sentences(out, lang, query)
        return AskResult(parsed, c, out, query, truncated)

    def _llm_order(self, out: ItemList, user: str | None, session: Sequence[str] | None) -> None:
        """For a short history, the LLM's order of the first ``llm_rerank`` items."""
        p = self.pipeline
        hist = p.user_batch([user or "\x00anonymous"]).sequence_list()[0].tolist()
        hist += [int(i) for i in p.items.index(list(session or []), missing="ignore") if i >= 0]
        n = min(self.llm_rerank, len(out.ids))
        if not hist or len(hist) > self.short_history or n < 2:
            return
        titles = [p.titles[i] or p.items.lookup([i])[0] for i in hist]
        cands = [p.titles[p.items.index([x])[0]] or x for x in out.ids[:n]]
        order = self.llm.rerank(titles, cands)
        if order is None:
            return
        perm = [*order, *range(n, len(out.ids))]
        out.ids = [out.ids[j] for j in perm]
        out.scores = out.scores[perm]
        for key in ("sources", "explanation"):
            out.fields[key] = [out.fields[key][j] for j in perm]

    def grounds(self, item: str, query: str = "", template: str = "") -> Grounds:
        """What a sentence about ``item`` may name: its title, people, tags and genres and
        year, and the request and template explanation the model is given."""
        p = self.pipeline
        idx = int(p.items.index([item])[0])
        year = float(p.facts.year[idx])
        return Grounds(
            title=p.titles[idx] or item,
            people=tuple(p.item_people_names[idx]),
            tags=tuple(dict.fromkeys(p.item_tag_lists[idx])),
            year=int(year) if np.isfinite(year) else None,
            context=tuple(x for x in (query, template) if x),
        )

    def lexicon(self) -> Lexicon:
        """The catalogue's titles, people and tags (built once per asker)."""
        if self._lexicon is None:
            self._lexicon = Lexicon.from_pipeline(self.pipeline)
        return self._lexicon

    def _llm_sentences(self, out: ItemList, lang: str, query: str) -> None:
        """The LLM's sentence for the first items' explanations, each shown only when it is
        grounded in the item's own facts (``"by": "llm"``, the template's text kept as
        ``template``); the template's stays otherwise, with the rejected sentence beside it
        (``llm_rejected``: sentence and why). A model that failed the start-up grounding
        check is not asked.

        The bug this guards (#15): for "relaxing piano music under 10 minutes" SmolLM2 wrote
        "The (1961) is a classic example of a "Parent Trap" in the context of the Internet."
        and it was shown as the explanation.
        """
        exps = out.fields["explanation"][: self.llm_explain]
        if not exps or not self.llm.grounding_check().passed:
            return
        lexicon = self.lexicon()
        for item, exp in zip(out.ids, exps, strict=False):
            g = self.grounds(item, query, exp["text"])
            sentence = self.llm.draft(g.title, g.facts(exp["text"]), lang)
            if sentence is None:
                continue  # the call failed (counted in the model's failures)
            why = check_sentence(sentence, g, lexicon, lang)
            if why is None:
                exp["template"] = exp["text"]
                exp["text"] = sentence
                exp["by"] = "llm"
            else:
                log.info("LLM sentence for %s rejected (%s): %r", item, why, sentence)
                exp["llm_rejected"] = {"sentence": sentence, "why": why}

    def _candidates(
        self, text: str, like: Sequence[str], allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, _Reasons]:
        """Items that match ``text`` or resemble the ``like`` items, with a fused relevance
        (reciprocal ranks) and the reasons."""
        rrf = self.search.rrf_k
        score: dict[int, float] = {}
        reasons = _Reasons(self.search)
        if text.strip():
            query = self._keyword_text(text)
            reasons.words = self.search.query_words(query)
            for hit in self.search.search(
                query,
                k=self.depth,
                allowed=allowed,
                semantic_margin=self.semantic_margin,
                explain=False,  # what matched is worked out for the page only
            ):
                score[hit.item] = hit.score
                # the part whose meaning matched ("text", "transcript" ...), or "" for none
                meant = "semantic" in hit.ranks or "description" in hit.ranks
                reasons.semantic[hit.item] = (hit.near or "text") if meant else ""
        like_idx = self.pipeline.items.index(list(like), missing="ignore")
        like_idx = like_idx[like_idx >= 0]
        vectors = self.pipeline.features.vectors  # content vectors, else the text's
        for anchor in like_idx.tolist():
            if vectors is not None:
                sims = vectors @ vectors[anchor]
                sims[like_idx] = -np.inf
                if allowed is not None:
                    sims[~allowed] = -np.inf
                top = np.argsort(-sims)[: self.depth]
                top = top[np.isfinite(sims[top]) & (sims[top] > 0)]
            else:
                ok = np.ones(self.search.n_items, bool) if allowed is None else allowed.copy()
                ok[like_idx] = False
                top = self.search.similar(anchor, self.depth, ok)[0]
            ref = {
                "id": self.pipeline.items.lookup([anchor])[0],
                "title": self.pipeline.titles[anchor],
            }
            for r, item in enumerate(top.tolist(), start=1):
                score[item] = score.get(item, 0.0) + 1.0 / (rrf + r)
                reasons.like.setdefault(item, ref)
        if not score:
            return np.zeros(0, np.int64), np.zeros(0), _Reasons(self.search)
        items = np.fromiter(score, np.int64, len(score))
        return items, np.fromiter(score.values(), float, len(score)), reasons

    def _affinity(self, items: np.ndarray, words: Sequence[str]) -> np.ndarray | None:
        """Each candidate's closeness (cosine of its text vector) to the mean of the person's
        own words, or ``None`` when there are none or no text vectors."""
        words = [w for w in words if w and w.strip()][:20]
        if not words or self.search.vindex is None:
            return None
        profile = np.mean([self.search.encode_query(w) for w in words], axis=0)
        rows = self.search.row_of[items]
        out = np.full(len(items), -1.0)
        ok = rows >= 0
        out[ok] = self.search.row_vectors[rows[ok]] @ profile
        return out

    def _popular(self, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        plays = self.pipeline.features.timeline.plays.copy()
        if allowed is not None:
            plays[~allowed] = -1.0
        ok = np.flatnonzero(plays >= 0)
        top = ok[np.argsort(-plays[ok], kind="stable")][: self.depth]
        return top, plays[top]


class _Reasons(Mapping):
    """The reasons a request gives each candidate, worked out when an item is shown: what
    words it matched where (tokenising two hundred candidates' fields cost 0.1 s a request),
    whether its meaning matched, and the item it resembles."""

    def __init__(self, search: SearchIndex) -> None:
        self.search = search
        self.words: dict[str, str] = {}
        self.semantic: dict[int, str] = {}
        self.like: dict[int, dict[str, Any]] = {}

    def __getitem__(self, item: int) -> list[Reason]:
        if item not in self.semantic and item not in self.like:
            raise KeyError(item)
        out = []
        if item in self.like:
            out.append(Reason("like", self.like[item]))
        if item in self.semantic:
            matched = self.search.matches(item, self.words) if self.words else {}
            out.append(Reason("query", {"matched": matched, "semantic": self.semantic[item]}))
        return out

    def __iter__(self):  # noqa: ANN204
        return iter({**self.semantic, **self.like})

    def __len__(self) -> int:
        return len({**self.semantic, **self.like})
