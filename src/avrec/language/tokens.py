"""Words for keyword search, in English and Chinese (and text that mixes them).

Latin-script runs are lower-cased, NFKC-normalised, stripped of English stop words and stemmed
with the Snowball English stemmer (PyStemmer: "relaxing" and "relax" meet); runs of CJK
ideographs are segmented with jieba in search mode (a long word also yields its shorter words,
so "电子音乐" matches "音乐"). Numbers are kept ("1995", "90s").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from avrec.content.text import _stopwords

__all__ = ["STOPWORDS_ZH", "stem", "tokenize"]

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_POSSESSIVE = re.compile(r"['’]s$")

#: Chinese function words that carry no topic
STOPWORDS_ZH = frozenset(
    "的 了 和 是 在 我 你 他 她 它 们 我们 你们 有 就 也 都 而 及 与 或 一个 这 那 这个 那个 "
    "吗 呢 吧 啊 很 喜欢 想 要 给 看 听 一些 一点 什么 些 点 个 部 首 种 类 关于".split()
)


@lru_cache(maxsize=1)
def _stemmer():  # noqa: ANN202
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _jieba():  # noqa: ANN202
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@lru_cache(maxsize=1)
def _stop_en() -> frozenset[str]:
    return _stopwords() - {"film", "movie"}  # a catalogue of films is searched for "film" too


def tokenize(text: str | None, stem: bool = True, stopwords: bool = True) -> list[str]:
    """Search tokens of ``text``, in order (duplicates kept: BM25 counts them)."""
    if not text:
        return []
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    pos = 0
    for m in _CJK_RUN.finditer(text):
        out.extend(_latin(text[pos : m.start()], stem, stopwords))
        for w in _jieba().lcut_for_search(m.group()):
            if w.strip() and not (stopwords and w in STOPWORDS_ZH):
                out.append(w)
        pos = m.end()
    out.extend(_latin(text[pos:], stem, stopwords))
    return out


def stem(words: list[str]) -> list[str]:
    """Snowball English stems of ``words`` (Chinese words come back as they are)."""
    return _stemmer().stemWords(words) if words else []


def _latin(text: str, stem: bool, stopwords: bool) -> list[str]:
    words = [_POSSESSIVE.sub("", w) for w in _LATIN.findall(text)]
    if stopwords:
        stop = _stop_en()
        words = [w for w in words if w not in stop]
    words = [w for w in words if w]
    return _stemmer().stemWords(words) if stem and words else words
