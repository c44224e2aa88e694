"""``avrec analyze``: items with media and text in, vectors, tags, transcripts and keywords out.

The work is split in three stages so each result is cached at the right grain:

1. **Media** (expensive; parallel across processes): decode key frames, covers, posters and the
   audio track; image vectors and ImageNet labels; text on screen; speech recognition where the
   voice-activity model finds speech, the spoken language and Whisper's encoder embedding;
   librosa signal statistics. Cached by the media files' sha256 and the models' versions.
2. **Text** (batched in the main process): every text segment of every item (primary text,
   transcript or subtitles, on-screen text, comments, image labels) is encoded once. Cached by the
   text's hash and the text encoder's version.
3. **Assembly** (cheap): the weighted text vector, fusion, zero-shot tags, keywords, people
   mentioned, comment sentiment. An item whose inputs and settings have not changed is skipped.

A media file that is missing or corrupt marks that item (status ``partial`` or ``error`` with
the reason) and the run goes on; every finished item is committed, so a killed run resumes where
it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avrec.config import ContentConfig
from avrec.content.fusion import fuse
from avrec.content.inputs import ItemInput, items_from_frame, workspace_inputs
from avrec.content.media import (
    ANALYZER_VERSION,
    MEDIA_KINDS,
    MediaAnalyzer,
    analyze_isolated,
    cores,
    crash_result,
    init_worker,
    run_in_worker,
    spawn_context,
    stable_hash,
)
from avrec.content.store import ContentStore
from avrec.content.tags import ZeroShotTagger
from avrec.content.text import (
    KeywordExtractor,
    PeopleMatcher,
    SentimentScorer,
    guess_script_language,
    subtitle_text,
)
from avrec.errors import ConfigError, MediaError
from avrec.features.base import create_encoder, l2_normalise
from avrec.media.source import MediaSource

__all__ = [
    "ANALYZER_VERSION",
    "AnalyzeReport",
    "ContentAnalyzer",
    "ItemInput",
    "MediaAnalyzer",
    "items_from_frame",
    "workspace_analyzer",
    "workspace_inputs",
]

log = logging.getLogger(__name__)

SEGMENTS = ("primary", "transcript", "ocr", "comments")
#: with the ray engine, texts to encode below this many are encoded here (starting actors
#: that each load the encoder costs more than a few batches)
RAY_TEXT_MIN = 1024
# tag evidence: source name -> the segment it reads
TAG_SOURCES = {"text": "primary", "speech": "transcript", "ocr": "ocr", "visual": "labels"}
Progress = Callable[[str, int, int], None]


# -- the analyser ---------------------------------------------------------------------------------
@dataclass
class AnalyzeReport:
    """What a run did."""

    total: int = 0
    analysed: int = 0
    unchanged: int = 0
    reassembled: int = 0  # analysed again only because the catalogue context changed
    media_analysed: int = 0
    media_cached: int = 0
    segments_encoded: int = 0
    segments_cached: int = 0
    media_seconds: float = 0.0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ContentAnalyzer:
    """Runs the three stages over a catalogue.

    Args:
        config: the ``[content]`` settings.
        store: where results and caches go.
        source: resolves media references (roots, downloads).
        workers: media processes (default: ``config.workers``; 0: one per core); on Ray,
            actors (default: one per CPU of the cluster).
        threads: model threads per process (default: cores / workers).
        engine: ``local`` (this machine) or ``ray`` (:mod:`avrec.compute.ray`).
        address: the Ray cluster to join (default: ``RAY_ADDRESS``, else a local one).
    """

    def __init__(
        self,
        config: ContentConfig,
        store: ContentStore,
        source: MediaSource | None = None,
        workers: int | None = None,
        threads: int | None = None,
        engine: str = "local",
        address: str | None = None,
    ) -> None:
        if engine not in ("local", "ray"):
            raise ConfigError(f"unknown engine {engine!r}: local or ray")
        self.config = config
        self.store = store
        self.source = source or MediaSource()
        self.engine, self.address = engine, address
        self.actors = workers or None  # on Ray: this many actors (default: one per CPU)
        w = config.workers if workers is None else workers
        self.workers = w if w > 0 else cores()
        self.threads = threads or max(1, cores() // self.workers)
        self.media = MediaAnalyzer(config, threads=self.threads)
        self._text = None

    @property
    def text_encoder(self):  # noqa: ANN201
        if self._text is None:
            self._text = create_encoder(self.config.text_encoder)
        return self._text

    def _media_result(self, key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not key:
            return {}, {}
        transient = getattr(self, "_transient", {})
        if key in transient:
            return transient[key]
        return self.store.get_media(key) or ({}, {})

    def _settings_hash(self) -> str:
        c = self.config
        return stable_hash(
            ANALYZER_VERSION,
            self.text_encoder.version,
            c.text_weights,
            c.fusion_weights,
            c.tag_vocabulary,
            c.tag_min_items,
            c.tag_source_weights,
            c.max_tags,
            c.min_tag_score,
            c.max_keywords,
        )

    # -- stage 1 --------------------------------------------------------------------------------
    def _resolve(self, item: ItemInput) -> tuple[dict[str, str], list[str], str]:
        """Local paths of the item's media, errors, and the media cache key."""
        paths, errors, hashes = {}, [], []
        for kind in MEDIA_KINDS:
            uri = item.media.get(kind)
            if not uri:
                continue
            try:
                p = self.source.resolve(uri)
                paths[kind] = str(p)
                hashes.append((kind, self.store.file_hash(p)))
            except (MediaError, OSError) as exc:
                errors.append(f"{kind}: {exc}")
                hashes.append((kind, "unavailable", uri))
        key = stable_hash("media", self.media.version, hashes) if paths else ""
        return paths, errors, key

    def _run_media(
        self, jobs: dict[str, dict[str, str]], report: AnalyzeReport, progress: Progress | None
    ) -> None:
        """Analyse each job's media; results are committed one by one as they finish.

        A result that says "this item's data is bad" (a ``MediaError``) is cached with the file
        hashes. A failure that may not happen again (an unexpected exception, a crashed worker)
        marks the item for this run only, so the next run tries again.
        """
        total, done = len(jobs), 0
        self._transient: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}
        if progress:
            progress("media", 0, total)

        def finish(key: str, res: dict[str, Any], vecs: dict[str, np.ndarray]) -> None:
            nonlocal done
            if res.get("retry"):
                self._transient[key] = (res, vecs)
            else:
                self.store.put_media(key, res, vecs)
            report.media_analysed += 1
            report.media_seconds += float(res.get("media_seconds") or 0.0)
            for stage, s in res.get("timings", {}).items():
                report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + s
            done += 1
            if progress:
                progress("media", done, total)

        if self.engine == "ray" and jobs:
            from avrec.compute.ray import connect, run_media

            connect(self.address)
            run_media(self.config.model_dump_json(), list(jobs.items()), finish, crash_result,
                      workers=self.actors)  # fmt: skip
            return
        if self.workers <= 1:  # in this process (a decoder crash would end the run)
            for key, paths in jobs.items():
                res, vecs = self._safe_analyze(paths)
                finish(key, res, vecs)
            return
        if not jobs:
            return
        queue = list(jobs.items())
        suspects: list[tuple[str, dict[str, str]]] = []
        while queue:
            queue, crashed = self._pool_pass(queue, self.workers, finish)
            suspects += crashed
        # Items in flight when a worker died: each alone, so only the culprit is marked.
        for key, paths in suspects:
            _, crashed = self._pool_pass([(key, paths)], 1, finish)
            for k, _p in crashed:
                finish(k, crash_result(), {})

    def _pool_pass(self, queue, workers: int, finish):  # noqa: ANN001, ANN202
        """Run ``queue`` in a fresh pool until it is done or a worker dies. Returns the jobs
        not started and the jobs that were in flight when the pool broke."""
        queue = list(queue)
        futures: dict[Future, tuple[str, dict[str, str]]] = {}
        with ProcessPoolExecutor(
            max_workers=min(workers, len(queue)),
            initializer=init_worker,
            initargs=(self.config.model_dump_json(), max(1, cores() // workers)),
            mp_context=spawn_context(),
        ) as pool:
            while queue or futures:
                while queue and len(futures) < 2 * workers:
                    job = queue.pop(0)
                    try:
                        futures[pool.submit(run_in_worker, *job)] = job
                    except BrokenProcessPool:
                        return [job, *queue], list(futures.values())
                ready, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in ready:
                    try:
                        key, res, vecs = fut.result()
                    except BrokenProcessPool:
                        return queue, list(futures.values())
                    futures.pop(fut)
                    finish(key, res, vecs)
        return [], []

    def _safe_analyze(self, paths: dict[str, str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return analyze_isolated(self.media, paths)

    # -- stage 2 --------------------------------------------------------------------------------
    def _encode_segments(
        self, texts: Sequence[str], report: AnalyzeReport, progress: Progress | None
    ) -> dict[str, np.ndarray]:
        enc = self.text_encoder
        keys = {t: stable_hash("seg", enc.version, t) for t in texts}
        cached = self.store.get_segments(list(set(keys.values())))
        todo = sorted({t for t, k in keys.items() if k not in cached}, key=lambda t: (len(t), t))
        report.segments_cached += len(keys) - len(todo)
        if progress:
            progress("text", 0, len(todo))
        batch = 256
        t0 = time.perf_counter()

        def keep(part: Sequence[str], vecs: np.ndarray) -> None:
            new = {keys[t]: v for t, v in zip(part, vecs, strict=True)}
            self.store.put_segments(new)  # committed as they come: a new run resumes
            cached.update(new)
            report.segments_encoded += len(part)
            if progress:
                progress("text", report.segments_encoded - done_before, len(todo))

        done_before = report.segments_encoded
        if self.engine == "ray" and len(todo) >= RAY_TEXT_MIN:
            from avrec.compute.ray import encode_texts

            # the encoder by name: each actor loads its own copy once
            name = self.config.text_encoder
            for part, vecs in encode_texts(name, todo, enc.dim, batch, self.address):
                keep(part, vecs)
        else:
            for lo in range(0, len(todo), batch):
                part = todo[lo : lo + batch]
                keep(part, enc.encode(part))
        report.stage_seconds["text"] = report.stage_seconds.get("text", 0.0) + (
            time.perf_counter() - t0
        )
        return {t: cached[k] for t, k in keys.items()}

    def _encode_queries_cached(self, texts: list[str]) -> np.ndarray:
        """Query vectors (tags), cached in the segment store like passages."""
        enc = self.text_encoder
        keys = [stable_hash("query", enc.version, t) for t in texts]
        cached = self.store.get_segments(keys)
        todo = [t for t, k in zip(texts, keys, strict=True) if k not in cached]
        if todo:
            encode = getattr(enc, "encode_queries", enc.encode)
            vecs = encode(todo)
            new = {stable_hash("query", enc.version, t): v for t, v in zip(todo, vecs, strict=True)}
            self.store.put_segments(new)
            cached.update(new)
        if not texts:
            return np.zeros((0, enc.dim), np.float32)
        return np.stack([cached[k] for k in keys])

    # -- the run --------------------------------------------------------------------------------
    def run(
        self,
        items: Sequence[ItemInput],
        catalogue: Sequence[ItemInput] | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> AnalyzeReport:
        """Analyse ``items``; ``catalogue`` (default: the items) supplies the tag vocabulary,
        keyword statistics and known people."""
        t_start = time.perf_counter()
        report = AnalyzeReport(total=len(items))
        catalogue = list(catalogue) if catalogue is not None else list(items)

        # Stage 1: media, for items whose media results are not cached.
        resolved: dict[str, tuple[dict[str, str], list[str], str]] = {}
        jobs: dict[str, dict[str, str]] = {}
        for it in items:
            paths, errors, key = self._resolve(it)
            resolved[it.item_id] = (paths, errors, key)
            if key and key not in jobs:
                cached_errors = self.store.media_errors(key)
                if cached_errors is not None and not (force and cached_errors):
                    report.media_cached += 1
                else:  # new, or --force on a result with problems: analyse (again)
                    jobs[key] = paths
        self._run_media(jobs, report, progress)

        # Segments of every item; an item is skipped when neither its own inputs nor the
        # catalogue context (tag vocabulary, known people, catalogue texts for keyword
        # statistics and tag calibration) changed.
        settings = self._settings_hash()
        ctx = _Context.build(self, catalogue)
        ctx_key = ctx.key
        old_keys = {} if force else self.store.item_keys()
        todo: list[tuple[ItemInput, dict[str, Any], dict[str, np.ndarray], dict, str, list]] = []
        for it in items:
            paths, errors, mkey = resolved[it.item_id]
            media, mvecs = self._media_result(mkey)
            errors = list(errors)
            segs = self._segments(it, media, errors)
            own = stable_hash(
                "item", settings, mkey, segs, errors, it.language, it.people, it.comments
            )
            old = old_keys.get(it.item_id, "")
            if old == f"{own}:{ctx_key}":
                report.unchanged += 1
                continue
            if old.split(":")[0] == own:
                report.reassembled += 1
            todo.append((it, media, mvecs, segs, f"{own}:{ctx_key}", errors))
        if not todo:
            report.seconds = time.perf_counter() - t_start
            return report

        # Stage 2: text vectors.
        texts = sorted({t for _, _, _, segs, _, _ in todo for t in segs.values() if t})
        seg_vecs = self._encode_segments(texts, report, progress)

        # Stage 3: assembly.
        t0 = time.perf_counter()
        self._calibrate_tags(ctx, todo, seg_vecs)
        if progress:
            progress("assemble", 0, len(todo))
        batch = 256
        for lo in range(0, len(todo), batch):
            rows = self._assemble(todo[lo : lo + batch], seg_vecs, ctx)
            self.store.put_items(rows)
            for r in rows:
                if r["errors"]:
                    report.errors[r["item_id"]] = r["errors"]
            report.analysed += len(rows)
            if progress:
                progress("assemble", min(lo + batch, len(todo)), len(todo))
        report.stage_seconds["assemble"] = time.perf_counter() - t0
        report.seconds = time.perf_counter() - t_start
        return report

    def _calibrate_tags(self, ctx: _Context, todo, seg_vecs) -> None:  # noqa: ANN001
        """Per-source tag calibration. The text source uses the whole catalogue's primary
        texts (their vectors are cached once analysed), so it does not drift with what one run
        happens to hold; the other sources use this run's items, or, for a small run, the
        calibration stored by the last larger one."""
        tagger = ctx.tagger
        enc = self.text_encoder
        dim = enc.dim
        keys = [stable_hash("seg", enc.version, t) for t in ctx.primary_texts if t]
        catalogue_vecs = list(self.store.get_segments(keys).values())
        for source, seg in TAG_SOURCES.items():
            rows = [seg_vecs[segs[seg]] for _, _, _, segs, _, _ in todo if segs.get(seg)]
            if source == "text":
                rows = catalogue_vecs or rows
            key = stable_hash("tag-calibration", enc.version, tagger.vocabulary, source)
            mat = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
            if tagger.calibrate(source, mat):
                self.store.put_meta(key, tagger.offsets[source].tolist())
            else:
                stored = self.store.get_meta(key)
                if stored is not None:
                    tagger.offsets[source] = np.asarray(stored, np.float32)

    @staticmethod
    def _primary(it: ItemInput) -> str:
        """The item's own words: title, tags, genres, description, people."""
        lines = [it.title]
        if it.tags:
            lines.append("Tags: " + ", ".join(it.tags))
        if it.categories:
            lines.append("Genres: " + ", ".join(it.categories))
        if it.description and it.description != it.title:
            lines.append(it.description)
        if it.people:
            lines.append("People: " + ", ".join(p["name"] for p in it.people[:12]))
        return "\n".join(x for x in lines if x).strip()

    def _segments(self, it: ItemInput, media: dict[str, Any], errors: list[str]) -> dict[str, str]:
        transcript = media.get("transcript") or ""
        sub = it.media.get("subtitles")
        if sub:
            try:
                transcript = (subtitle_text(self.source.resolve(sub)) + "\n" + transcript).strip()
            except (MediaError, OSError) as exc:
                errors.append(f"subtitles: {exc}")
        labels = media.get("labels") or []
        return {
            "primary": self._primary(it),
            "transcript": transcript[:4000],
            "ocr": (media.get("ocr_text") or "")[:2000],
            "comments": "\n".join(it.comments[:50])[:4000],
            "labels": ("a picture of: " + ", ".join(str(lab[0]) for lab in labels))
            if labels
            else "",
        }

    def _text_facts(self, it: ItemInput, segs: dict[str, str], words: str, ctx) -> dict:  # noqa: ANN001
        credited = {p["name"] for p in it.people}
        mentions = ctx.people.mentions(
            {
                "title": it.title,
                "description": it.description,
                "transcript": segs["transcript"],
                "ocr": segs["ocr"],
                "comments": segs["comments"],
            }
        )
        return {
            "keywords": [
                [w, round(s, 4)] for w, s in ctx.keywords.extract(words, self.config.max_keywords)
            ],
            "people": [
                {
                    "name": m.name,
                    "roles": list(m.roles),
                    "source": m.source,
                    "credited": m.name in credited,
                }
                for m in mentions
            ],
            "sentiment": ctx.sentiment.summarise(it.comments) if it.comments else None,
        }

    def _assemble(self, batch, seg_vecs, ctx) -> list[dict[str, Any]]:  # noqa: ANN001
        c = self.config
        dim = self.text_encoder.dim
        n = len(batch)

        def seg_matrix(name: str) -> np.ndarray:
            m = np.zeros((n, dim), np.float32)
            for i, (_, _, _, segs, _, _) in enumerate(batch):
                if segs.get(name):
                    m[i] = seg_vecs[segs[name]]
            return m

        seg = {s: seg_matrix(s) for s in (*SEGMENTS, "labels")}
        text = np.zeros((n, dim), np.float32)
        for s in SEGMENTS:
            text += seg[s] * float(c.text_weights.get(s, 0.0))
        text = l2_normalise(text)

        parts: dict[str, np.ndarray | None] = {"text": text}
        for m, d in ctx.media_dims.items():
            mat = np.zeros((n, d), np.float32)
            for i, (_, _, mvecs, _, _, _) in enumerate(batch):
                v = mvecs.get(m)
                if v is not None and len(v) == d:
                    mat[i] = v
            parts[m] = mat
        fused, layout = fuse(parts, c.fusion_weights)
        tags = ctx.tagger.tag(
            {source: seg[name] for source, name in TAG_SOURCES.items()}, c.tag_source_weights
        )

        rows = []
        for i, (it, media, mvecs, segs, ikey, errors) in enumerate(batch):
            errs = list(errors) + list(media.get("errors", []))
            words = "\n".join(
                x for x in (it.title, it.description, segs["transcript"], segs["ocr"]) if x
            )
            try:
                facts = self._text_facts(it, segs, words, ctx)
            except Exception as exc:  # noqa: BLE001 - one item's text must not stop the run
                log.exception("text analysis failed for item %s", it.item_id)
                errs.append(f"text analysis failed: {type(exc).__name__}: {exc}")
                facts = {"keywords": [], "people": [], "sentiment": None}
            language = it.language or media.get("language") or guess_script_language(words)
            info = {
                "language": language,
                "duration": media.get("duration"),
                "transcript": media.get("transcript", ""),
                "speech_language": media.get("language"),
                "speech_ratio": media.get("speech_ratio"),
                "ocr_text": media.get("ocr_text", ""),
                "labels": media.get("labels", []),
                "audio": media.get("audio", {}),
                "frames": media.get("frames", 0),
                "tags": [t.to_dict() for t in tags[i]],
                **facts,
                "fusion_layout": layout,
                "timings": media.get("timings", {}),
            }
            vectors = {"text": text[i], "fused": fused[i]}
            for m in ctx.media_dims:
                if m in mvecs:
                    vectors[m] = mvecs[m]
            has_media = bool(it.media.keys() & set(MEDIA_KINDS))
            if not errs:
                status = "ok"
            elif has_media and not mvecs:
                status = "error"
            else:
                status = "partial"
            rows.append(
                {
                    "item_id": it.item_id,
                    # a failure that may not recur is tried again next run, never "unchanged"
                    "key": "retry" if media.get("retry") else ikey,
                    "status": status,
                    "errors": errs,
                    "info": info,
                    "vectors": vectors,
                }
            )
        return rows


@dataclass
class _Context:
    """Catalogue-wide helpers for assembly, and a key that changes when they would."""

    tagger: ZeroShotTagger
    keywords: KeywordExtractor
    people: PeopleMatcher
    sentiment: SentimentScorer
    media_dims: dict[str, int]
    primary_texts: list[str]
    key: str

    @classmethod
    def build(cls, analyzer: ContentAnalyzer, catalogue: Sequence[ItemInput]) -> _Context:
        c = analyzer.config
        vocab = list(c.tag_vocabulary)
        if not vocab:
            counts: dict[str, int] = {}
            for it in catalogue:
                for t in {*it.categories, *it.tags}:
                    counts[t] = counts.get(t, 0) + 1
            vocab = [t for t, n in counts.items() if n >= c.tag_min_items]
        tagger = ZeroShotTagger(
            analyzer.text_encoder,
            vocab,
            max_tags=c.max_tags,
            min_score=c.min_tag_score,
            encode=analyzer._encode_queries_cached,
        )
        corpus = [f"{it.title}\n{it.description}" for it in catalogue]
        credits = sorted(
            {(p["name"], p.get("role") or "creator") for it in catalogue for p in it.people}
        )
        primary = [analyzer._primary(it) for it in catalogue]
        dims: dict[str, int] = {"visual": analyzer.media.image_encoder.dim}
        if c.speech:
            from avrec.features.speech import WhisperSpeech

            dims["audio"] = WhisperSpeech.dim
        if c.audio_features:
            from avrec.features.audio import AudioFeatures

            dims["audio_signal"] = AudioFeatures.dim
        # what changes an item's tags or people: the vocabulary and the known people. Keyword
        # statistics and tag calibration follow the catalogue's texts too, but drift slowly;
        # they are refreshed for every item by --force.
        key = stable_hash("context", tagger.vocabulary, credits)[:16]
        return cls(
            tagger,
            KeywordExtractor(corpus),
            PeopleMatcher(credits),
            SentimentScorer(),
            dims,
            primary,
            key,
        )


def workspace_analyzer(
    workspace,  # noqa: ANN001
    workers: int | None = None,
    engine: str | None = None,
    address: str | None = None,
) -> ContentAnalyzer:
    """A :class:`ContentAnalyzer` on a workspace's ``content.db`` and media settings, on the
    engine of ``[compute]`` unless ``engine`` says otherwise."""
    c = workspace.config.content
    compute = workspace.config.compute
    source = workspace.media_source()
    return ContentAnalyzer(
        c,
        ContentStore(workspace.root / "content.db"),
        source,
        workers=workers,
        engine=engine or compute.engine,
        # --address, then RAY_ADDRESS, then [compute] address (then a local cluster)
        address=address or os.environ.get("RAY_ADDRESS") or compute.address,
    )
