"""Whether an LLM's explanation sentence is grounded in the item it explains.

A generated sentence is shown only if it passes :func:`check_sentence`: it is one sentence
of sensible length in the language asked for, it echoes no prompt or template, it has no
empty or garbled title ("The (1961) is a classic ..."), it says something of the item (a
word of its title, people, tags, year or the request), it makes no claim no fact can hold
(born, award, sequel, famous ...), and every name it carries belongs to the item's own facts
(:class:`Grounds`: its title, people, tags and genres, year, and the request and template
explanation the model was given). Names are found four ways:

- the catalogue's own titles, people and tags (:class:`Lexicon`), matched longest first, so
  naming another item's title, person or tag is caught even in lower case;
- quoted strings (``"..."``, ``“...”``, ``《...》``);
- capitalised spans ("Parent Trap", "Mozart"), the usual shape of a name the catalogue lacks
  (a sentence's first word counts only as part of a longer span);
- years and decades.

:func:`startup_check` asks a model for sentences about a few fixed items (``[grounding_check]``
in ``prompts.toml``) before it writes any for users; a model whose sentences are grounded less
often than ``min_share`` writes none for that process.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckReport", "Grounds", "Lexicon", "check_sentence", "startup_check"]

log = logging.getLogger(__name__)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# one token per CJK character (so Chinese names match as character runs), words otherwise
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*")
_MAX_NAME = 16  # tokens: longer catalogue names are matched by their first 16 only if exact

# English function words: a span made of them names nothing, and an English sentence has some
_FUNCTION = frozenset(
    """a about above after again against all also an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our out over own same she should
    so some such than that the their them then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you your
    yours you'll you're it's that's there's let's perfect great""".split()
)
_FOREIGN = frozenset(
    "le la les une des du et est pour avec el los las es una con und der die das ist ein eine "
    "mit il di che per".split()
)
# claims about an item's history and standing that no fact avrec gives a model can hold
# (SmolLM2-135M: "the legendary jazz musician, was born in 1998", "adapted into a video game",
# "certified by the International Piano Council")
_CLAIMS = frozenset(
    "born died award won oscar grammy certified adapted adaptation remake sequel prequel "
    "bestselling legendary famous acclaimed".split()
)
# capitalised words that name no catalogue entry
_NOT_NAMES = frozenset(
    "i i'm i've i'd tv ok english chinese mandarin cantonese french german spanish italian "
    "japanese korean".split()
)
_CONNECT = frozenset({"of", "the", "and", "de", "la", "le", "von", "van", "du", "del", "&"})
_ABBREV = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "no", "vol", "jr", "sr", "e.g", "i.e"})
_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”|《([^》]*)》|「([^」]*)」|(?<!\w)\'([^\']*)\'(?!\w)')
_EMPTY = re.compile(r'\(\s*\)|\[\s*\]|"\s*"|“\s*”|《\s*》|「\s*」|(?<!\w)\'\s*\'')
_GARBLED = re.compile(r"\b(?:the|a|an|of)\s*(?:\(|[,.;:!?)]|$)", re.IGNORECASE)
_ECHO = re.compile(r"[{}\[\]<>]|\b(?:item|facts|sentence|title)\s*:", re.IGNORECASE)
_LIST = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s")
_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|2[01]\d\d)(s?)(?!\d)")
_DECADE = re.compile(r"(?<![\d\w])'?([1-9]0)s\b")
_END = re.compile(r"[.!?。！？][\"”’')）」》]*$")
_STOP_EN = re.compile(r"[.!?]+[\"”’')]*\s+(?=\S)")
_STOP_ZH = re.compile(r"[。！？]+[”’」》)）]*(?=\S)")


def _fold(text: str) -> str:
    """Lower case, compatibility forms, no accents, one kind of apostrophe."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'").replace("‘", "'"))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def _stem(word: str) -> str:
    """A plural's singular, roughly ("nocturnes" and "nocturne" are one name)."""
    if word.endswith("'s"):
        word = word[:-2]
    if word in _FUNCTION:
        return word
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


@dataclass(frozen=True)
class _Tok:
    key: str  # folded and stemmed, what names are matched on
    raw: str  # as written (its capitals say whether it is a name)
    start: int


def _tokens(text: str) -> list[_Tok]:
    text = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")
    out = []
    for m in _TOKEN.finditer(text):
        key = _stem(_fold(m.group()))
        if key:
            out.append(_Tok(key, m.group(), m.start()))
    return out


def _key(text: str) -> tuple[str, ...]:
    return tuple(t.key for t in _tokens(text))


def _is_cjk(word: str) -> bool:
    return bool(re.match(rf"[{_CJK}]", word))


def _capital(word: str) -> bool:
    return word[:1].isupper() or word[:1].isdigit()


class Lexicon:
    """The catalogue's names (titles, people, tags and genres) as token tuples, so a sentence
    is searched for all of them in one pass over its words.

    Args:
        titles: every item's title.
        people: every person credited or named.
        tags: every tag and genre.
    """

    def __init__(
        self, titles: Iterable[str] = (), people: Iterable[str] = (), tags: Iterable[str] = ()
    ) -> None:
        self.names: dict[tuple[str, ...], str] = {}
        for kind, names in (("tag", tags), ("person", people), ("title", titles)):
            for name in names:
                key = _key(name or "")[:_MAX_NAME]
                if _is_name(key):
                    self.names[key] = kind  # a title wins over a tag of the same words
        self.longest = max((len(k) for k in self.names), default=1)

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> Lexicon:
        """The names a fitted :class:`~avrec.pipeline.pipeline.Pipeline` knows: its titles,
        and the people, genres and tags of its knowledge graph (else of its item lists)."""
        titles = [t for t in pipeline.titles if t]
        g = getattr(pipeline, "graph", None)
        if g is not None and getattr(g, "names", None) is not None:
            kinds = [str(t) for t in g.types]
            people = [n for n, k in zip(g.names, kinds, strict=True) if k == "person"]
            tags = [n for n, k in zip(g.names, kinds, strict=True) if k in ("genre", "tag")]
        else:
            rows = pipeline.item_people_names
            people = sorted({p for i in range(len(rows)) for p in rows[i]})
            rows = pipeline.item_tag_lists
            tags = sorted({t for i in range(len(rows)) for t in rows[i]})
        return cls(titles, people, tags)

    def __len__(self) -> int:
        return len(self.names)


def _is_name(key: tuple[str, ...]) -> bool:
    """Whether these words can be told apart from ordinary words in a sentence at all
    (a film called "It" or "Up" cannot)."""
    content = [w for w in key if w not in _FUNCTION]
    if not content:
        return False
    return any(len(w) > 2 or _is_cjk(w) or w.isdigit() for w in content)


@dataclass(frozen=True)
class Grounds:
    """What a sentence about one item may name.

    Args:
        title: the item's title.
        people: its people.
        tags: its tags and genres.
        year: its year (``None``: unknown).
        context: other text the model was given and may quote: the request first, then the
            template explanation (which may name the item the person watched before).
    """

    title: str
    people: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    year: int | None = None
    context: tuple[str, ...] = ()

    def facts(self, template: str | None = None) -> list[str]:
        """The facts the model is given about the item (and may name)."""
        out = [template] if template else []
        if self.year is not None:
            out.append(f"year: {self.year}")
        if self.tags:
            out.append("tags: " + ", ".join(self.tags[:8]))
        if self.people:
            out.append("people: " + ", ".join(self.people[:4]))
        return out

    def subject(self) -> set[str]:
        """The words that say something of the item: its title's, people's, tags', year's
        and the request's (a sentence with none of them explains nothing)."""
        parts = [self.title, *self.people, *self.tags, *self.context[:1]]
        if self.year is not None:
            parts.append(str(self.year))
        return {w for p in parts for w in _key(p) if w not in _FUNCTION}

    def allowed(self) -> tuple[str, set[str]]:
        """The allowed text (its tokens joined, padded for whole-word search) and tokens."""
        parts = [self.title, *self.people, *self.tags, *self.context]
        if self.year is not None:
            parts.append(str(self.year))
        keys = [" ".join(_key(p)) for p in parts if p]
        text = " | ".join(k for k in keys if k)
        return f" {text} ", set(text.split())


def _contained(key: Sequence[str], text: str, tokens: set[str]) -> bool:
    """``key`` appears as whole words in the allowed text, or each of its content words does."""
    if f" {' '.join(key)} " in text:
        return True
    content = [w for w in key if w not in _FUNCTION]
    return bool(content) and all(w in tokens for w in content)


def _form(text: str, lang: str) -> str | None:
    """Why ``text`` is not one sentence of sensible length (``None``: it is)."""
    if not text or not text.strip():
        return "empty"
    if len([line for line in text.splitlines() if line.strip()]) > 1:
        return "more than one line"
    flat = " ".join(text.split())
    zh = lang.lower().startswith("zh")
    if len(flat) > (150 if zh else 300) or len(_tokens(flat)) > (100 if zh else 45):
        return "too long"
    if _LIST.match(flat):
        return "a list, not a sentence"
    if _ECHO.search(flat):
        return "echoes the prompt or a template"
    for m in _STOP_EN.finditer(flat):
        before = flat[: m.start()].split()
        word = before[-1].lower().strip("\"'“(") if before else ""
        if len(word) == 1 or word in _ABBREV:
            continue  # an initial ("J. S. Bach") or an abbreviation
        return "more than one sentence"
    if _STOP_ZH.search(flat):
        return "more than one sentence"
    if not _END.search(flat):
        return "unfinished"  # cut off at the token limit, or no sentence at all
    return None


def _language(toks: list[_Tok], lang: str, allowed: set[str]) -> str | None:
    """Why the words are not in ``lang`` (``None``: they are). Words the facts hold (a
    Chinese title in an English sentence) do not count either way."""
    own = [t for t in toks if t.key not in allowed]
    cjk = sum(_is_cjk(t.raw) for t in own)
    latin = [t for t in own if not _is_cjk(t.raw) and not t.raw.isdigit()]
    if lang.lower().startswith("zh"):
        return None if cjk and cjk >= 2 * len(latin) else "not in Chinese"
    if cjk:
        return "not in English"
    english = sum(t.key in _FUNCTION for t in toks)
    foreign = sum(t.key in _FOREIGN for t in latin)
    if not english or foreign >= english:
        return "not in English"
    odd = sum(any(ord(c) > 0x24F for c in t.raw) for t in latin)
    return "not in English" if odd > len(latin) // 5 else None


def _spans(toks: list[_Tok]) -> list[list[_Tok]]:
    """Runs of capitalised words (joined by "of", "the", "de" ...): names as written, less
    the sentence's first word (capitalised by grammar)."""
    runs: list[list[_Tok]] = []
    run: list[_Tok] = []
    for j, t in enumerate(toks):
        if t.raw[:1].isupper():
            run.append(t)
        elif run and t.key in _CONNECT and j + 1 < len(toks) and toks[j + 1].raw[:1].isupper():
            run.append(t)
        else:
            if run:
                runs.append(run)
            run = []
    if run:
        runs.append(run)
    out = []
    for r in runs:
        if r[0] is toks[0]:
            # the first word has its capital from the sentence ("Soothing Chopin nocturnes"
            # -> "Chopin"; "The Parent Trap" -> "Parent Trap"; "This" -> nothing)
            r = r[1:]
            while r and r[0].key in _FUNCTION:
                r = r[1:]
        r = [t for t in r if t.key not in _NOT_NAMES]
        while r and r[-1].key in _CONNECT:
            r = r[:-1]
        if r and any(t.key not in _FUNCTION for t in r):
            out.append(r)
    return out


def _catalogue_names(
    toks: list[_Tok], lexicon: Lexicon, own: set[tuple[str, ...]]
) -> list[tuple[tuple[str, ...], str]]:
    """The catalogue's names in the sentence, longest first and not overlapping, with their
    kind. The item's own names take part, so a title inside its own ("Toy Story" in "Toy
    Story 2") is not found on its own."""
    found = []
    keys = [t.key for t in toks]
    longest = max(lexicon.longest, max((len(k) for k in own), default=1))
    j = 0
    while j < len(toks):
        for n in range(min(longest, len(toks) - j), 0, -1):
            key = tuple(keys[j : j + n])
            kind = "own" if key in own else lexicon.names.get(key)
            if kind is None:
                continue
            written = toks[j : j + n]
            if kind in ("title", "person") and not any(_is_cjk(w) for w in key):
                # a title or name is written with capitals ("Scream", not "scream")
                if not any(_capital(t.raw) for t in written if t.key not in _FUNCTION):
                    continue
            if kind != "own":
                found.append((key, kind))
            j += n - 1
            break
        j += 1
    return found


def check_sentence(text: str, grounds: Grounds, lexicon: Lexicon, lang: str = "en") -> str | None:
    """Why ``text`` may not be shown as the explanation for the item of ``grounds`` (``None``
    when it may): not one sentence of sensible length in ``lang``, a template or prompt
    echoed, an empty or garbled title, or a title, person, tag, quoted string, capitalised
    name or year that is not among the item's facts.

    Args:
        text: the model's sentence.
        grounds: the item's facts.
        lexicon: the catalogue's names.
        lang: the language asked for (``zh``: Chinese, else English).
    """
    problem = _form(text, lang)
    if problem:
        return problem
    flat = " ".join(text.split())
    if _EMPTY.search(flat) or _GARBLED.search(flat):
        return "an empty or garbled title"
    allowed_text, allowed = grounds.allowed()
    toks = _tokens(flat)
    problem = _language(toks, lang, allowed)
    if problem:
        return problem
    years = {int(y) for y in re.findall(r"\b\d{4}\b", allowed_text)}
    for m in _YEAR.finditer(flat):
        y = int(m.group(1))
        if m.group(2):  # "the 1990s"
            if grounds.year is None or grounds.year // 10 * 10 != y:
                if f" {y}s " not in allowed_text and f" {y} " not in allowed_text:
                    return f"a decade not among the facts: {m.group()}"
        elif y not in years:
            return f"a year not among the facts: {y}"
    for m in _DECADE.finditer(flat):
        d = int(m.group(1))
        if (grounds.year is None or grounds.year % 100 // 10 * 10 != d) and (
            f" {d}s " not in allowed_text and f" {d} " not in allowed_text
        ):
            return f"a decade not among the facts: {m.group()}"
    claims = [t.raw for t in toks if t.key in _CLAIMS and t.key not in allowed]
    if claims:
        return f"claims what the facts do not hold: {claims[0]}"
    if not any(t.key in grounds.subject() for t in toks):
        return "says nothing of the item's facts"
    own = {k for k in (_key(x) for x in (grounds.title, *grounds.people, *grounds.tags)) if k}
    for key, kind in _catalogue_names(toks, lexicon, own):
        if f" {' '.join(key)} " not in allowed_text:
            return f"names a {kind} that is not this item's: {' '.join(key)}"
    for m in _QUOTED.finditer(flat):
        quoted = next(g for g in m.groups() if g is not None)
        key = _key(quoted)
        if not key:
            return "an empty or garbled title"
        if not _contained(key, allowed_text, allowed):
            return f"quotes what is not among the facts: {quoted.strip()}"
    for span in _spans(toks):
        key = tuple(t.key for t in span)
        if not _contained(key, allowed_text, allowed):
            return "names what is not among the facts: " + " ".join(t.raw for t in span)
    return None


@dataclass
class CheckReport:
    """The start-up grounding check's result: how many of the fixed items' sentences were
    grounded, and whether that is enough for the model to write explanations."""

    passed: bool
    grounded: int
    asked: int
    min_share: float
    rejected: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "grounded": self.grounded,
            "asked": self.asked,
            "min_share": self.min_share,
            "rejected": self.rejected,
        }

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return f"{self.grounded}/{self.asked} grounded (needs {self.min_share:.0%}): {verdict}"


def startup_check(llm: Any, spec: dict[str, Any]) -> CheckReport:
    """Ask ``llm`` for a sentence about each of the fixed items in ``spec`` (``items``, each
    with ``title``, ``people``, ``tags``, ``year``, ``request``, ``template``, ``lang``) and
    check each against its own facts, with the items' names as the catalogue. Stops as soon
    as the model can no longer reach ``min_share``.

    Args:
        llm: a :class:`~avrec.language.llm.LanguageModel` (its ``draft`` is asked).
        spec: the ``[grounding_check]`` table of ``prompts.toml``.
    """
    items = list(spec.get("items", []))
    min_share = float(spec.get("min_share", 0.75))
    if not items:  # a prompts file may turn the check off with an empty list
        return CheckReport(True, 0, 0, min_share)
    need = -(-round(min_share * len(items) * 1000) // 1000)  # ceil, without float noise
    lexicon = Lexicon(
        [it["title"] for it in items],
        [p for it in items for p in it.get("people", [])],
        [t for it in items for t in it.get("tags", [])],
    )
    grounded, asked, rejected = 0, 0, []
    for it in items:
        g = Grounds(
            title=it["title"],
            people=tuple(it.get("people", [])),
            tags=tuple(it.get("tags", [])),
            year=it.get("year"),
            context=(it.get("request", ""), it.get("template", "")),
        )
        lang = it.get("lang", "en")
        sentence = llm.draft(g.title, g.facts(it.get("template")), lang)
        asked += 1
        why = "no answer" if sentence is None else check_sentence(sentence, g, lexicon, lang)
        if why is None:
            grounded += 1
        else:
            rejected.append({"title": g.title, "sentence": sentence or "", "why": why})
        if grounded >= need or grounded + len(items) - asked < need:
            break
    return CheckReport(grounded >= need, grounded, asked, min_share, rejected)
