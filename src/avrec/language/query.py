"""What a request in words asks for: the description, and the constraints it states.

"a funny cat video, under a minute" is a description ("a funny cat video") and a constraint
(duration <= 60 s). :class:`QueryParser` finds, by rules in English and Chinese:

- **duration**: "under a minute", "less than 5 minutes", "longer than 2 hours",
  "between 3 and 10 min", "一分钟以内", "不超过十分钟", "半小时以上";
- **language**: "in French", "Spanish-language", "中文的", "粤语";
- **year or era**: "from the 90s", "1990s", "in 1995", "before 1980", "after 2000",
  "between 1990 and 1995", "90年代", "九十年代", "2000年以后";
- **genre or tag**: any of the catalogue's genres and tags named in the request ("comedies",
  "sci-fi"), in Chinese through :data:`ZH_LABELS` ("喜剧" is Comedy);
- **exclusions**: "not X", "no X", "without X", "except X", "不要X", "不是X", "别X", "除了X":
  a genre or tag when X is one, otherwise a word the items must not contain;
- **references**: "like <title>", "similar to <title>", "像<title>", "类似<title>", resolved
  against the catalogue's titles by a lookup the caller gives (fuzzy title search).

What the rules take out of the text is removed from the description, so "comedies from the
90s" searches for comedies' meaning with a genre filter and a year range, not for "90s".

The same :class:`Constraints` model is the JSON schema an LLM must fill when one is
configured (the language issue's LLM backends); the rules are the fallback and the default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LANGUAGES",
    "ZH_LABELS",
    "Constraints",
    "ParsedQuery",
    "QueryParser",
    "chinese_number",
]


class Constraints(BaseModel):
    """Constraints stated in a request. Durations in seconds, years inclusive."""

    model_config = ConfigDict(extra="forbid")

    min_duration: float | None = Field(None, ge=0)
    max_duration: float | None = Field(None, ge=0)
    languages: list[str] = Field(default_factory=list, description="ISO 639-1 codes")
    year_from: int | None = Field(None, ge=1800, le=2200)
    year_to: int | None = Field(None, ge=1800, le=2200)
    include: list[str] = Field(default_factory=list, description="genres or tags wanted")
    exclude: list[str] = Field(default_factory=list, description="genres or tags not wanted")
    exclude_words: list[str] = Field(default_factory=list, description="words not wanted")
    like: list[str] = Field(default_factory=list, description="item ids the request names")

    @property
    def empty(self) -> bool:
        return self == Constraints()

    def merged(self, newer: Constraints) -> Constraints:
        """These constraints refined by ``newer`` (a later turn of a conversation): a bound
        or language stated again replaces the earlier one; lists grow."""
        out = self.model_copy(deep=True)
        for name in ("min_duration", "max_duration", "year_from", "year_to"):
            v = getattr(newer, name)
            if v is not None:
                setattr(out, name, v)
        if newer.languages:
            out.languages = list(newer.languages)
        for name in ("include", "exclude", "exclude_words", "like"):
            merged = list(dict.fromkeys([*getattr(out, name), *getattr(newer, name)]))
            setattr(out, name, merged)
        # a genre wanted now that was unwanted before (or the reverse) follows the newer turn
        out.include = [x for x in out.include if x not in newer.exclude]
        out.exclude = [x for x in out.exclude if x not in newer.include]
        return out


class ParsedQuery(BaseModel):
    """A request split into its description (for search) and its constraints."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="what is asked for, without the constraints")
    constraints: Constraints = Field(default_factory=Constraints)


#: language names (English and Chinese) -> ISO 639-1
LANGUAGES: dict[str, str] = {
    "english": "en",
    "chinese": "zh",
    "mandarin": "zh",
    "cantonese": "yue",
    "french": "fr",
    "spanish": "es",
    "german": "de",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "russian": "ru",
    "portuguese": "pt",
    "hindi": "hi",
    "arabic": "ar",
    "swedish": "sv",
    "dutch": "nl",
    "英语": "en",
    "英文": "en",
    "中文": "zh",
    "汉语": "zh",
    "国语": "zh",
    "普通话": "zh",
    "华语": "zh",
    "粤语": "yue",
    "法语": "fr",
    "西班牙语": "es",
    "德语": "de",
    "意大利语": "it",
    "日语": "ja",
    "日文": "ja",
    "韩语": "ko",
    "韩文": "ko",
    "俄语": "ru",
}

#: Chinese words for genres and tags -> English labels, the first the catalogue has wins
#: (matched case-insensitively; a label the catalogue lacks is not a constraint)
ZH_LABELS: dict[str, str | tuple[str, ...]] = {
    "喜剧": "comedy",
    "搞笑": ("funny", "comedy"),
    "动作": "action",
    "冒险": "adventure",
    "动画": "animation",
    "卡通": "animation",
    "儿童": "children's",
    "犯罪": "crime",
    "纪录片": "documentary",
    "纪录": "documentary",
    "剧情": "drama",
    "奇幻": "fantasy",
    "魔幻": "fantasy",
    "黑色电影": "film-noir",
    "恐怖": "horror",
    "音乐剧": "musical",
    "歌舞": "musical",
    "悬疑": "mystery",
    "推理": "mystery",
    "爱情": "romance",
    "浪漫": "romance",
    "科幻": "sci-fi",
    "惊悚": "thriller",
    "战争": "war",
    "西部": "western",
    "电子": "electronic",
    "电子音乐": "electronic",
    "摇滚": "rock",
    "流行": "pop",
    "古典": "classical",
    "爵士": "jazz",
    "说唱": "hip hop",
    "嘻哈": "hip hop",
    "民谣": "folk",
    "金属": "metal",
    "钢琴": "piano",
    "美食": "food",
    "旅行": "travel",
    "游戏": "gaming",
    "体育": "sports",
    "运动": "sports",
    "宠物": "pets",
    "猫": "cat",
    "狗": "dog",
}

_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}  # fmt: skip
_NUM = r"(\d+(?:\.\d+)?|an?|one|two|three|four|five|six|seven|eight|nine|ten|fifteen|twenty|thirty|half an?)"  # noqa: E501
_WORD_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20,
                 "thirty": 30, "half a": 0.5, "half an": 0.5}  # fmt: skip
_UNIT = r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)"
_UNIT_WORD = r"(seconds?|secs?|minutes?|mins?|hours?|hrs?)"  # "90s" alone is not a duration
_ZH_NUM = r"([\d.]+|[零一二两三四五六七八九十百半]+)"
_ZH_UNIT = r"(秒钟?|分钟|分|小时|个小时|钟头)"


def chinese_number(text: str) -> float | None:
    """``"十五"`` -> 15, ``"两百"`` -> 200, ``"半"`` -> 0.5, ``"3"`` -> 3; ``None`` when it is
    not a number."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    if text == "半":
        return 0.5
    total, current = 0, 0
    for ch in text:
        if ch in _ZH_DIGITS:
            current = _ZH_DIGITS[ch]
        elif ch == "十":
            total += (current or 1) * 10
            current = 0
        elif ch == "百":
            total += (current or 1) * 100
            current = 0
        elif ch == "半":
            return total + current + 0.5 if (total or current) else 0.5
        else:
            return None
    return float(total + current)


def _seconds(value: float, unit: str) -> float:
    u = unit.lower()
    if u.startswith(("h", "小", "个", "钟")):
        return value * 3600
    if u.startswith(("m", "分")):
        return value * 60
    return value


def _en_number(s: str) -> float:
    s = s.lower().strip()
    return _WORD_NUMBERS[s] if s in _WORD_NUMBERS else float(s)


def _year(s: str) -> int:
    return int(s)


def _decade(s: str) -> int:
    """``"90"`` -> 1990, ``"1990"`` -> 1990, ``"20"`` -> 2020, ``"00"`` -> 2000."""
    d = int(s)
    if d >= 100:
        return d
    return 1900 + d if d >= 30 else 2000 + d


_EN_LESS = r"(?:under|less than|shorter than|at most|no more than|no longer than|within|up to|below|max(?:imum)?)"  # noqa: E501
_EN_MORE = r"(?:over|more than|longer than|at least|above|min(?:imum)?)"
_NEG = r"(?:not|no|without|except|but not|nothing|never|excluding|minus)"
_ZH_NEG = r"(?:不要|不想要|不想看|不想听|不是|别|除了|不含|不包括|没有)"
_ZH_NEG_TERM = (
    _ZH_NEG
    + r"(?:太|要|看|听)?([\u4e00-\u9fff]{1,6}?)(?:的|了|类)?(?=[\s,，。]|$|电影|视频|音乐|歌)"
)
_DECADE = r"(?:from\s+)?(?:the\s+)?(?:early\s+|late\s+)?'?\b((?:19|20)?\d0)'?s\b"
_BEFORE = r"\b(?:before|until|up to|prior to|earlier than)\s+((?:19|20)\d\d)\b"
_AFTER = (
    r"\b(?:after|since|newer than|later than)\s+((?:19|20)\d\d)\b"
    r"|\bfrom\s+((?:19|20)\d\d)\s+(?:on|onwards|and later)\b"
)


class QueryParser:
    """Rules that split a request into description and :class:`Constraints`.

    Args:
        labels: the catalogue's genres (a mention of one becomes a constraint).
        find_title: a lookup from a title as typed to an item id (``None`` when nothing
            matches well), for "like <title>".
        tags: the catalogue's free tags: one becomes a constraint only when the request
            writes it as a tag ("#cats", "tagged cats") or excludes it ("not #cats",
            "without cats"); a catalogue of hashtags would otherwise filter by every word.
    """

    def __init__(
        self,
        labels: Iterable[str] = (),
        find_title: Callable[[str], str | None] | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        self.labels = {lab.lower(): lab for lab in labels if lab}
        self.tags = {t.lower(): t for t in tags if t and t.lower() not in self.labels}
        self.find_title = find_title
        # longest first, so "science fiction" wins over "fiction"
        self._label_words = sorted(self.labels, key=len, reverse=True)

    # -- the parts ---------------------------------------------------------------------------
    def parse(self, query: str) -> ParsedQuery:
        """The description and constraints of ``query`` (English, Chinese or both)."""
        c = Constraints()
        text = f" {query.strip()} "
        text = self._years(text, c)  # first: "the 90s" is an era, not 90 seconds
        text = self._duration(text, c)
        text = self._languages(text, c)
        text = self._like(text, c)
        text = self._negations(text, c)
        text = self._tags(text, c)
        text = self._labels(text, c)
        text = re.sub(r"\s+", " ", re.sub(r"[,，。;；]+\s*(?=[,，。;；]|$)", "", text)).strip()
        text = text.strip(" ,，。;；")
        return ParsedQuery(text=text, constraints=c)

    def _duration(self, text: str, c: Constraints) -> str:
        num, unit = _NUM, _UNIT
        pat = rf"\bbetween\s+{num}\s*(?:{unit}\s*)?(?:and|to|-)\s*{num}\s*{unit}\b"
        m = re.search(pat, text, re.I)
        if m:
            u1 = m.group(2) or m.group(4)
            c.min_duration = _seconds(_en_number(m.group(1)), u1)
            c.max_duration = _seconds(_en_number(m.group(3)), m.group(4))
            text = text[: m.start()] + " " + text[m.end() :]
        for pat, attr in ((_EN_LESS, "max_duration"), (_EN_MORE, "min_duration")):
            m = re.search(rf"\b{pat}\s+{num}[\s-]*{unit}\b(?:\s+long)?", text, re.I)
            if m:
                setattr(c, attr, _seconds(_en_number(m.group(1)), m.group(2)))
                text = text[: m.start()] + " " + text[m.end() :]
        m = re.search(rf"\b(\d+)[\s-]*{_UNIT_WORD}(?:\s+long)?\b", text, re.I)
        if m and c.max_duration is None and c.min_duration is None:
            # "a 5-minute video": about that long
            sec = _seconds(float(m.group(1)), m.group(2))
            c.min_duration, c.max_duration = sec * 0.5, sec * 1.5
            text = text[: m.start()] + " " + text[m.end() :]
        zn, zu = _ZH_NUM, _ZH_UNIT
        m = re.search(rf"(?:不超过|不到|少于|短于|小于|最多){zn}{zu}(?:以内|之内|以下)?", text)
        if m is None:
            m = re.search(rf"{zn}{zu}(?:以内|之内|以下|内)", text)
        if m:
            v = chinese_number(m.group(1))
            if v is not None:
                c.max_duration = _seconds(v, m.group(2))
                text = text[: m.start()] + " " + text[m.end() :]
        m = re.search(rf"(?:超过|多于|长于|大于|至少){zn}{zu}(?:以上)?", text)
        if m is None:
            m = re.search(rf"{zn}{zu}以上", text)
        if m:
            v = chinese_number(m.group(1))
            if v is not None:
                c.min_duration = _seconds(v, m.group(2))
                text = text[: m.start()] + " " + text[m.end() :]
        return text

    def _years(self, text: str, c: Constraints) -> str:
        def cut(m: re.Match) -> str:
            return text[: m.start()] + " " + text[m.end() :]

        m = re.search(r"\bbetween\s+((?:19|20)\d\d)\s+(?:and|to)\s+((?:19|20)\d\d)\b", text, re.I)
        if m is None:
            m = re.search(r"\b((?:19|20)\d\d)\s*(?:-|–|to)\s*((?:19|20)\d\d)\b", text)
        if m:
            c.year_from, c.year_to = _year(m.group(1)), _year(m.group(2))
            return cut(m)
        m = re.search(_DECADE, text, re.I)
        if m:
            start = _decade(m.group(1))
            c.year_from, c.year_to = start, start + 9
            return cut(m)
        m = re.search(_BEFORE, text, re.I)
        if m:
            c.year_to = _year(m.group(1)) - 1
            return cut(m)
        m = re.search(_AFTER, text, re.I)
        if m:
            y = _year(m.group(1) or m.group(2))
            c.year_from = y + 1 if m.group(0).lower().startswith(("after", "newer", "later")) else y
            return cut(m)
        m = re.search(r"\b(?:in|from|of)\s+((?:19|20)\d\d)\b", text, re.I)
        if m:
            c.year_from = c.year_to = _year(m.group(1))
            return cut(m)
        # Chinese: 90年代, 九十年代, 1990年代, 2000年以后, 1980年以前, 1995年的
        m = re.search(r"((?:19|20)?\d0|[一二三四五六七八九]十)年代", text)
        if m:
            g = m.group(1)
            start = _decade(g) if g[0].isdigit() else _decade(str(int(chinese_number(g) or 0)))
            c.year_from, c.year_to = start, start + 9
            return cut(m)
        m = re.search(r"((?:19|20)\d\d)年?(?:以后|之后|后)", text)
        if m:
            c.year_from = _year(m.group(1))
            return cut(m)
        m = re.search(r"((?:19|20)\d\d)年?(?:以前|之前|前)", text)
        if m:
            c.year_to = _year(m.group(1)) - 1
            return cut(m)
        m = re.search(r"((?:19|20)\d\d)年的?", text)
        if m:
            c.year_from = c.year_to = _year(m.group(1))
            return cut(m)
        return text

    def _languages(self, text: str, c: Constraints) -> str:
        names = "|".join(k for k in LANGUAGES if k.isascii())
        m = re.search(rf"\b(?:in|spoken in|sung in)\s+({names})\b", text, re.I)
        if m is None:
            m = re.search(rf"\b({names})[\s-]language\b", text, re.I)
        if m:
            c.languages = [LANGUAGES[m.group(1).lower()]]
            text = text[: m.start()] + " " + text[m.end() :]
        zh = "|".join(sorted((k for k in LANGUAGES if not k.isascii()), key=len, reverse=True))
        m = re.search(rf"(?:用|说)?({zh})(?:的|版)?", text)
        if m:
            code = LANGUAGES[m.group(1)]
            if code not in c.languages:
                c.languages.append(code)
            text = text[: m.start()] + " " + text[m.end() :]
        return text

    def _like(self, text: str, c: Constraints) -> str:
        if self.find_title is None:
            return text
        pats = (
            r"\b(?:something\s+|anything\s+|more\s+)?(?:like|similar to|in the style of)\s+"
            r"[\"“']?(.+?)[\"”']?(?=\s+(?:but|and|with|without|under|over|from|in)\b|[,.;!?]|$)",
            r"(?:像|类似|类似于|和|跟)《?([^《》，。,]+?)》?(?:一样|那样|似的|的|那种)(?:电影|视频|歌|音乐|作品)?",
            r"《([^》]+)》",
        )
        for pat in pats:
            m = re.search(pat, text.strip(), re.I)
            if not m:
                continue
            found = self.find_title(m.group(1).strip())
            if found is not None:
                c.like.append(found)
                stripped = text.strip()
                return " " + stripped[: m.start()] + " " + stripped[m.end() :] + " "
        return text

    def _negations(self, text: str, c: Constraints) -> str:
        def handle(term: str) -> bool:
            term = term.strip().lower().strip("\"'“”")
            label = self._excluded_label(term)
            if label is not None:
                c.exclude.append(label)
                return True
            if term and len(term) <= 30:
                c.exclude_words.append(term)
                return True
            return False

        while True:
            m = re.search(
                rf"\b{_NEG}\s+(?:too\s+|any\s+|more\s+)?([\w'-]+(?:\s+[\w'-]+)?)", text, re.I
            )
            if not m:
                break
            phrase = m.group(1)
            # "not too violent" / "no horror": the first word, or two when they are a label
            two = phrase.lower()
            one = phrase.split()[0]
            term = two if self._excluded_label(two) is not None else one
            end = m.start(1) + len(term)
            if not handle(term):
                break
            text = text[: m.start()] + " " + text[end:]
        while True:
            m = re.search(_ZH_NEG_TERM, text)
            if not m:
                break
            term = m.group(1)
            label = self._label_of(term)
            if label is not None:
                c.exclude.append(label)
            else:
                c.exclude_words.append(term)
            text = text[: m.start()] + " " + text[m.end() :]
        return text

    def _label_of(self, term: str) -> str | None:
        """The catalogue label ``term`` names (English, plural or Chinese), or ``None``."""
        t = term.strip().lower()
        if not t:
            return None
        if not t.isascii():  # Chinese: "恐怖片" and "恐怖电影" name the genre "恐怖"
            for zh in (t, re.sub(r"(片|电影|视频|影片|类|剧|的|歌曲|歌|音乐)$", "", t)):
                if zh in ZH_LABELS:
                    en = ZH_LABELS[zh]
                    for cand in (en,) if isinstance(en, str) else en:
                        if cand in self.labels:
                            return self.labels[cand]
            return None
        for cand in (t, _singular(t), t.replace(" ", "-"), t.replace("-", " ")):
            if cand in self.labels:
                return self.labels[cand]
        if t in ("scifi", "science fiction", "sf"):
            return self.labels.get("sci-fi")
        return None

    def _excluded_label(self, term: str) -> str | None:
        """A genre, or else a tag (a tag is excluded when named, written as a tag or not)."""
        label = self._label_of(term.lstrip("#"))
        if label is not None:
            return label
        t = term.strip().lower().lstrip("#")
        return self.tags.get(t) or self.tags.get(_singular(t))

    def _tags(self, text: str, c: Constraints) -> str:
        """Tags the request writes as tags: "#cats", "tagged cats"."""
        for m in list(re.finditer(r"#([\w][\w-]*)|\btagged\s+([\w][\w-]*)", text, re.I)):
            word = (m.group(1) or m.group(2)).lower()
            tag = self.tags.get(word) or self.labels.get(word)
            if tag is not None and tag not in c.exclude and tag not in c.include:
                c.include.append(tag)
        return re.sub(r"#([\w][\w-]*)", r"\1", text)

    def _labels(self, text: str, c: Constraints) -> str:
        # the words stay in the description (they carry meaning for the search); the
        # genres they name become a filter. Chinese genre words first, longest first.
        for zh in sorted(ZH_LABELS, key=len, reverse=True):
            if zh in text:
                label = self._label_of(zh)
                if label is not None and label not in c.exclude and label not in c.include:
                    c.include.append(label)
        words = _words_with_spans(text)
        taken: list[tuple[int, int]] = []
        for n in (3, 2, 1):
            for i in range(len(words) - n + 1):
                span = (words[i][1], words[i + n - 1][2])
                if any(a < span[1] and span[0] < b for a, b in taken):
                    continue
                phrase = " ".join(w for w, _, _ in words[i : i + n])
                label = self._label_of(phrase)
                if label is not None and label not in c.exclude:
                    if label not in c.include:
                        c.include.append(label)
                    taken.append(span)
        return text


def _words_with_spans(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(r"[A-Za-z][\w'-]*", text)]


def _singular(word: str) -> str:
    """English plural to singular, enough for genre names ("comedies", "thrillers")."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def labels_of(values: Sequence[Sequence[str]]) -> list[str]:
    """Every distinct label in per-item label lists."""
    return sorted({x for v in values for x in v if x})
