"""What an item's words say: keywords, people mentioned, comment sentiment, subtitles, language.

These work on plain strings so they serve both ``avrec analyze`` and anything else that has text
(search queries, comments arriving in real time):

- :class:`KeywordExtractor`: jieba's TF-IDF for Chinese; for other text, TF-IDF with document
  frequencies counted over the catalogue (so words every title uses, like "video", rank low).
- :class:`PeopleMatcher`: finds the catalogue's known people (directors, cast, artists, hosts) in
  free text: word n-grams for Latin scripts, substrings for CJK names.
- :class:`SentimentScorer`: VADER for English comments, SnowNLP (trained on Chinese reviews) for
  Chinese ones; the item score is the mean compound score in [-1, 1].
- :func:`subtitle_text`: the words of an SRT or WebVTT file without cue numbers, times and tags.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KeywordExtractor",
    "PeopleMatcher",
    "SentimentScorer",
    "cjk_ratio",
    "guess_script_language",
    "subtitle_text",
]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W\d_](?:[^\W_]|['’-](?=[^\W_]))*", re.UNICODE)


def cjk_ratio(text: str) -> float:
    """Share of the non-space characters that are CJK ideographs."""
    chars = [c for c in text if not c.isspace()]
    return len(_CJK.findall(text)) / len(chars) if chars else 0.0


def guess_script_language(text: str) -> str | None:
    """``"zh"`` for mostly-CJK text, ``"en"`` for Latin text, ``None`` when there is no text.

    A cheap script test for choosing a tokeniser or sentiment model, not a language identifier
    (speech gets its language from Whisper).
    """
    if not text or not text.strip():
        return None
    return "zh" if cjk_ratio(text) >= 0.2 else "en"


_POSSESSIVE = re.compile(r"['’]s$")


def _words(text: str) -> list[str]:
    """Lower-cased words; a possessive "'s" is dropped ("MacLeod's" -> "macleod")."""
    return [
        _POSSESSIVE.sub("", w.lower()) for w in _WORD.findall(unicodedata.normalize("NFKC", text))
    ]


def _stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {"s", "t", "don", "ll", "ve", "re", "film", "movie"}


class KeywordExtractor:
    """Keywords of a text by TF-IDF.

    Args:
        corpus: the catalogue's texts, for document frequencies of non-Chinese words (without a
            corpus every word counts as rare and keywords are the most frequent non-stopwords).
    """

    def __init__(self, corpus: Iterable[str] = ()) -> None:
        self._stop = _stopwords()
        df: Counter[str] = Counter()
        n = 0
        for doc in corpus:
            n += 1
            df.update(set(_words(doc or "")))
        self.n_docs = n
        self._df = df

    def _idf(self, word: str) -> float:
        return math.log((1 + self.n_docs) / (1 + self._df.get(word, 0))) + 1.0

    def extract(self, text: str, k: int = 10) -> list[tuple[str, float]]:
        """Up to ``k`` keywords with weights, best first."""
        if not text or not text.strip() or k <= 0:
            return []
        scored: dict[str, float] = {}
        if _CJK.search(text):
            import jieba
            import jieba.analyse

            jieba.setLogLevel(60)
            cjk = "".join(c if _CJK.match(c) or c.isspace() else " " for c in text)
            for word, weight in jieba.analyse.extract_tags(cjk, topK=k, withWeight=True):
                scored[word] = float(weight)
        words = [w for w in _words(_CJK.sub(" ", text)) if len(w) > 2 and w not in self._stop]
        if words:
            tf = Counter(words)
            total = sum(tf.values())
            for w, c in tf.items():
                scored[w] = max(scored.get(w, 0.0), c / total * self._idf(w))
        return sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


@dataclass(frozen=True)
class PersonMention:
    """A known person found in an item's text."""

    name: str
    roles: tuple[str, ...]
    source: str  # which text: description, transcript, ocr, comments, title


def _norm_name(name: str) -> tuple[str, ...]:
    return tuple(_words(name))


class PeopleMatcher:
    """Finds known people by name in text.

    Args:
        people: ``(name, role)`` pairs, e.g. every credit of the catalogue.
        min_tokens: Latin names shorter than this many words are ignored (one-word names such
            as "Madonna" would otherwise match ordinary words); CJK names need 2+ characters.
    """

    def __init__(self, people: Iterable[tuple[str, str]], min_tokens: int = 2) -> None:
        self._latin: dict[tuple[str, ...], tuple[str, set[str]]] = {}
        self._cjk: dict[str, tuple[str, set[str]]] = {}
        for name, role in people:
            name = str(name or "").strip()
            role = str(role or "creator")
            if not name:
                continue
            if _CJK.search(name):
                key = re.sub(r"\s+", "", unicodedata.normalize("NFKC", name))
                if len(key) >= 2:
                    self._cjk.setdefault(key, (name, set()))[1].add(role)
                continue
            toks = _norm_name(name)
            if len(toks) >= min_tokens:
                self._latin.setdefault(toks, (name, set()))[1].add(role)
        self._max_len = max((len(t) for t in self._latin), default=0)
        self._cjk_lens = sorted({len(k) for k in self._cjk}, reverse=True)

    def __len__(self) -> int:
        return len(self._latin) + len(self._cjk)

    def find(self, text: str) -> list[tuple[str, tuple[str, ...]]]:
        """``(name, roles)`` of every known person named in ``text``, in order of appearance.

        The longest known name wins where names overlap ("Steven Spielberg" over "Spielberg").
        """
        if not text:
            return []
        text = unicodedata.normalize("NFKC", text)
        hits: list[tuple[int, tuple[str, set[str]]]] = []  # (character offset, person)
        if self._latin:
            # CJK blanked out (same length) so "导演Steven Spielberg的" still yields the name
            spans = list(_WORD.finditer(_CJK.sub(" ", text)))
            toks = [_POSSESSIVE.sub("", m.group().lower()) for m in spans]
            i = 0
            while i < len(toks):
                for n in range(min(self._max_len, len(toks) - i), 0, -1):
                    hit = self._latin.get(tuple(toks[i : i + n]))
                    if hit:
                        hits.append((spans[i].start(), hit))
                        i += n
                        break
                else:
                    i += 1
        if self._cjk and _CJK.search(text):
            pos = [j for j, c in enumerate(text) if not c.isspace()]
            flat = "".join(text[j] for j in pos)
            i = 0
            while i < len(flat):
                for n in self._cjk_lens:
                    hit = self._cjk.get(flat[i : i + n])
                    if hit:
                        hits.append((pos[i], hit))
                        i += n
                        break
                else:
                    i += 1
        found: dict[str, tuple[str, ...]] = {}
        for _, (name, roles) in sorted(hits, key=lambda h: h[0]):
            found.setdefault(name, tuple(sorted(roles)))
        return list(found.items())

    def mentions(self, texts: dict[str, str]) -> list[PersonMention]:
        """People found in each named text (a person is reported once, from the first text)."""
        seen: set[str] = set()
        out = []
        for source, text in texts.items():
            for name, roles in self.find(text):
                if name not in seen:
                    seen.add(name)
                    out.append(PersonMention(name, roles, source))
        return out


class SentimentScorer:
    """Sentiment of short texts (comments) in [-1, 1]: VADER for English, SnowNLP for Chinese."""

    def __init__(self) -> None:
        self._vader = None

    def score(self, text: str) -> float:
        """Compound sentiment of one text; 0.0 for empty text."""
        if not text or not text.strip():
            return 0.0
        if guess_script_language(text) == "zh":
            from snownlp import SnowNLP

            return float(2.0 * SnowNLP(text).sentiments - 1.0)
        if self._vader is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._vader = SentimentIntensityAnalyzer()
        return float(self._vader.polarity_scores(text)["compound"])

    def summarise(self, texts: Sequence[str]) -> dict[str, float] | None:
        """Mean score and shares of positive/negative texts; ``None`` when there are none."""
        scores = [self.score(t) for t in texts if t and t.strip()]
        if not scores:
            return None
        return {
            "mean": float(sum(scores) / len(scores)),
            "positive": sum(s > 0.05 for s in scores) / len(scores),
            "negative": sum(s < -0.05 for s in scores) / len(scores),
            "count": float(len(scores)),
        }


_CUE_TIME = re.compile(r"^\s*\d{1,2}:\d{2}(:\d{2})?[.,]\d{3}\s*-->")
_TAG = re.compile(r"<[^>]+>|\{\\[^}]*\}")
_VTT_BLOCK = re.compile(r"(NOTE|STYLE|REGION)(\s|$)")


def subtitle_text(path: str | Path, max_chars: int = 100_000) -> str:
    """The spoken words of an SRT or WebVTT file (or plain text), one cue per line.

    Cue numbers, timings, the WEBVTT header, NOTE blocks and markup tags are dropped;
    consecutive repeated lines (roll-up captions) are kept once.
    """
    raw = Path(path).read_bytes()[: max_chars * 4]
    text = raw.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()
    vtt = text.lstrip().startswith("WEBVTT")
    out: list[str] = []
    skip_block = False
    block_start = True
    for idx, line in enumerate(lines):
        s = line.strip()
        if not s:
            skip_block = False
            block_start = True
            continue
        first, block_start = block_start, False
        if _CUE_TIME.match(s):
            skip_block = False  # no header or NOTE block holds a timing line
            continue
        if skip_block:
            continue
        if first and vtt and (s.startswith("WEBVTT") or _VTT_BLOCK.match(s)):
            skip_block = True  # header (with "Kind:", "Language:" lines), NOTE, STYLE, REGION
            continue
        nxt = lines[idx + 1] if idx + 1 < len(lines) else ""
        if _CUE_TIME.match(nxt):
            continue  # cue number or WebVTT cue identifier
        s = _TAG.sub("", s).strip()
        if s and (not out or out[-1] != s):
            out.append(s)
    return "\n".join(out)[:max_chars]
