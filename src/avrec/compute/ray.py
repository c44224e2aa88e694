"""Heavy work on a Ray cluster: the media stage of ``avrec analyze`` as a pool of actors.

Ray is an optional dependency (``pip install 'avrec[scale]'``). The driver (the ``avrec``
process) joins the cluster named by ``address`` (or ``RAY_ADDRESS``), or starts a local one.
Every node needs avrec installed (the same version) and must reach the media the driver
resolved: the same paths (a shared file system) or the same media roots.

One actor per CPU the cluster offers (or ``workers``), each holding one
:class:`~avrec.content.media.MediaAnalyzer`, so the models load once per actor. Results come
back as they finish and the caller commits each one (an interrupted run resumes from the
cache). When an actor dies (its node went away, or a decoder killed its process) the items it
held are run again one at a time at the end, on a fresh actor, so only an item that kills
its actor a second time is marked failed; a replacement actor is started while the cluster
has a CPU for it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from avrec.errors import ConfigError

__all__ = [
    "cluster_cpus",
    "connect",
    "precompute_pages",
    "run_media",
    "train_sasrec",
    "tune_trials",
]

log = logging.getLogger(__name__)

#: jobs sent to one actor ahead of its answers (one running, one waiting: no idle gap)
IN_FLIGHT = 2
#: seconds to wait for an actor's answer before looking at the cluster again
POLL_S = 2.0
#: seconds without any actor up before the run gives up
NO_ACTOR_S = 120.0

Finish = Callable[[str, dict[str, Any], dict[str, Any]], None]


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray engine needs Ray: pip install 'avrec[scale]' (or pip install ray)"
        ) from None
    return ray


def connect(address: str | None = None) -> str:
    """Join the Ray cluster at ``address`` (default: ``RAY_ADDRESS``; neither: start a local
    one for this process). Returns the address joined ("local" for a new local cluster)."""
    ray = _ray()
    target = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        try:
            ray.init(
                address=target,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {target}: {exc}") from None
    return target or "local"


def cluster_cpus() -> int:
    """CPUs of the cluster's live nodes."""
    ray = _ray()
    return int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")))


def _actor_class() -> Any:
    ray = _ray()

    @ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)
    class MediaWorker:
        """One media analyser per actor (models loaded once, on first use)."""

        def __init__(self, config_json: str) -> None:
            from avrec.content.media import init_worker

            init_worker(config_json, 1)

        def run(self, key: str, paths: dict[str, str]) -> tuple[str, dict, dict]:
            from avrec.content.media import run_in_worker

            return run_in_worker(key, paths)

    return MediaWorker


class _Pool:
    """Actors, started and ready, with the jobs each ready one holds. Jobs go only to
    actors that are up, so an actor that waits for a CPU (or never gets one, its node gone)
    holds none."""

    def __init__(self, config_json: str, workers: int | None, cap: int) -> None:
        self.ray = _ray()
        self.cls = _actor_class()
        self.config_json = config_json
        self.workers = workers
        self.cap = cap  # no more actors than jobs
        self.starting: dict[Any, Any] = {}  # actor -> its readiness ref
        self.failed_starts = 0
        self.held: dict[Any, list[tuple[Any, tuple[str, dict[str, str]]]]] = {}

    def target(self) -> int:
        return min(self.workers or cluster_cpus(), self.cap)

    def top_up(self) -> None:
        """Start actors up to the target (the CPUs of live nodes, or ``workers``)."""
        while len(self.starting) + len(self.held) < self.target():
            actor = self.cls.remote(self.config_json)
            self.starting[actor] = actor.__ray_ready__.remote()

    def promote(self, timeout: float = 0.0) -> None:
        """Move started actors to the ready ones."""
        if not self.starting:
            return
        refs = {ref: actor for actor, ref in self.starting.items()}
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        for ref in ready:
            actor = refs[ref]
            del self.starting[actor]
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:  # it died starting: forget it
                self.failed_starts += 1
                log.warning("a media actor failed to start: %s", str(exc).splitlines()[0])
                if self.failed_starts > 3 * max(1, self.target()):
                    raise ConfigError(
                        "media actors keep failing to start on the Ray cluster (is avrec "
                        f"installed on every node?): {str(exc).splitlines()[0]}"
                    ) from None
                continue
            self.held[actor] = []

    def refs(self) -> dict[Any, tuple[Any, tuple[str, dict[str, str]]]]:
        return {ref: (actor, job) for actor, jobs in self.held.items() for ref, job in jobs}

    def submit(self, queue: list, limit: int, actors: int) -> None:
        """Send queued jobs to the first ``actors`` ready actors, ``limit`` each."""
        for actor in list(self.held)[:actors]:
            jobs = self.held[actor]
            while queue and len(jobs) < limit:
                job = queue.pop(0)
                jobs.append((actor.run.remote(*job), job))

    def drop(self, actor: Any) -> list[tuple[str, dict[str, str]]]:
        """Forget a dead actor; the jobs it held."""
        jobs = [job for _, job in self.held.pop(actor, [])]
        self.starting.pop(actor, None)
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is gone already
            pass
        return jobs

    def close(self) -> None:
        for actor in [*self.held, *self.starting]:
            self.drop(actor)


def run_media(
    config_json: str,
    jobs: list[tuple[str, dict[str, str]]],
    finish: Finish,
    crashed: Callable[[], dict[str, Any]],
    workers: int | None = None,
) -> None:
    """Analyse ``jobs`` (media key, local paths) on the cluster; ``finish(key, result,
    vectors)`` for each, in the order they finish (``crashed()``: the result of an item that
    killed its actor twice). ``workers``: actors (default: one per CPU of the cluster)."""
    ray = _ray()
    if not jobs:
        return
    if (workers or cluster_cpus()) < 1:
        raise ConfigError("the Ray cluster has no CPU to run the media stage on")
    pool = _Pool(config_json, workers, len(jobs))
    suspects: list[tuple[str, dict[str, str]]] = []
    try:
        _drain(ray, pool, list(jobs), finish, suspects, IN_FLIGHT, len(jobs))
        # the jobs an actor held when it died: one at a time, so only a culprit is marked
        for job in suspects:
            again: list[tuple[str, dict[str, str]]] = []
            _drain(ray, pool, [job], finish, again, 1, 1)
            for key, _paths in again:
                finish(key, crashed(), {})
    finally:
        pool.close()


def _drain(
    ray: Any,
    pool: _Pool,
    queue: list[tuple[str, dict[str, str]]],
    finish: Finish,
    suspects: list[tuple[str, dict[str, str]]],
    limit: int,
    actors: int,
) -> None:
    """Run ``queue`` on at most ``actors`` of ``pool``'s actors, ``limit`` jobs each in
    flight, until every job finished or was set aside in ``suspects`` (held by an actor
    that died)."""
    idle_since = time.monotonic()
    while queue or pool.refs():
        pool.top_up()
        pool.promote()
        pool.submit(queue, limit, actors)
        refs = pool.refs()
        if not refs:  # no actor up yet (starting, or waiting for a CPU)
            pool.promote(timeout=POLL_S)
            if not pool.held and time.monotonic() - idle_since > NO_ACTOR_S:
                raise ConfigError("no Ray node has come up to run the media stage on")
            continue
        idle_since = time.monotonic()
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
        for ref in ready:
            actor, _job = refs[ref]
            try:
                key, res, vecs = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError):  # fmt: skip
                held = pool.drop(actor)
                log.warning("a media actor died holding %d item(s); they run again", len(held))
                suspects += held
                continue
            if actor not in pool.held:  # its actor died meanwhile: it runs again with the rest
                continue
            pool.held[actor] = [(r, j) for r, j in pool.held[actor] if r != ref]
            finish(key, res, vecs)


class _PageActor:
    """A Ray Data actor: the bundle loaded once, pages for each batch of users (as JSON, so
    Ray Data carries one string per batch whatever the pages hold)."""

    def __init__(self, bundle_path: str, label: str, k: int, lang: str) -> None:
        import threadpoolctl

        from avrec.models import load_model

        threadpoolctl.threadpool_limits(1)  # one CPU per actor
        self.model = load_model(bundle_path)
        self.label, self.k, self.lang = label, k, lang

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from avrec.pipeline.precompute import page_record

        out = []
        for users_json in batch["users"]:
            users = json.loads(users_json)
            lists = self.model.recommend_explained(users, k=self.k, lang=self.lang)
            pages = [page_record(lst, self.label, self.k, self.lang) for lst in lists]
            out.append(json.dumps(pages, ensure_ascii=False))
        return {"users": batch["users"], "pages": np.asarray(out, dtype=object)}


def precompute_pages(
    bundle_path: str,
    label: str,
    users: list[str],
    k: int,
    lang: str,
    batch: int,
    address: str | None = None,
    workers: int | None = None,
) -> Any:
    """Yield ``(users, pages)`` per batch of users as the cluster's actors finish them (Ray
    Data ``map_batches`` over an actor pool, one actor per CPU or ``workers``)."""
    ray = _ray()
    connect(address)
    parts = [json.dumps(users[lo : lo + batch]) for lo in range(0, len(users), batch)]
    if not parts:
        return
    size = max(1, min(workers or cluster_cpus(), len(parts)))
    ds = ray.data.from_items([{"users": p} for p in parts], override_num_blocks=len(parts))
    ds = ds.map_batches(
        _PageActor,
        fn_constructor_args=(bundle_path, label, k, lang),
        batch_size=1,
        num_cpus=1,
        concurrency=size,
        batch_format="numpy",
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # avrec shows its own; Ray Data's go quiet too
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    for row in ds.iter_rows():
        yield json.loads(row["users"]), json.loads(row["pages"])


class _TextActor:
    """A Ray Data actor: the text encoder loaded once, passage vectors for each batch of
    texts (as JSON in, float32 bytes out)."""

    def __init__(self, encoder: str) -> None:
        import threadpoolctl

        from avrec.features.base import create_encoder

        threadpoolctl.threadpool_limits(1)  # one CPU per actor
        self.encoder = create_encoder(encoder)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        out = []
        for texts_json in batch["texts"]:
            vecs = np.asarray(self.encoder.encode(json.loads(texts_json)), np.float32)
            out.append(vecs.tobytes())
        return {"texts": batch["texts"], "vectors": np.asarray(out, dtype=object)}


def encode_texts(
    encoder: str,
    texts: list[str],
    dim: int,
    batch: int = 256,
    address: str | None = None,
    workers: int | None = None,
) -> Any:
    """Yield ``(texts, vectors)`` per batch as the cluster's actors encode them (Ray Data
    ``map_batches`` over an actor pool, the encoder loaded once per actor; one actor per
    CPU or ``workers``). Batches come back in the order they finish."""
    import numpy as np

    ray = _ray()
    connect(address)
    parts = [json.dumps(texts[lo : lo + batch]) for lo in range(0, len(texts), batch)]
    if not parts:
        return
    size = max(1, min(workers or cluster_cpus(), len(parts)))
    ds = ray.data.from_items([{"texts": p} for p in parts], override_num_blocks=len(parts))
    ds = ds.map_batches(
        _TextActor,
        fn_constructor_args=(encoder,),
        batch_size=1,
        num_cpus=1,
        concurrency=size,
        batch_format="numpy",
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    for row in ds.iter_rows():
        part = json.loads(row["texts"])
        yield part, np.frombuffer(row["vectors"], np.float32).reshape(len(part), dim)


def _trial(name: str, params: dict[str, Any], split: Any, metric: str) -> float:
    """One trial on a cluster CPU: fit on the training part, the mean validation metric."""
    import threadpoolctl

    from avrec.eval.evaluate import evaluate_model, metric_context
    from avrec.eval.metrics import parse_metrics
    from avrec.models.base import create_model

    with threadpoolctl.threadpool_limits(1):
        metrics = parse_metrics([metric])
        valid = split.full.select(split.masks["valid"])
        model = create_model(name, **params)
        model.fit(split.train, valid)
        ev = evaluate_model(model, split, metrics, stage="valid", ctx=metric_context(split))
        return float(ev.per_user[metrics[0].name].mean()) if len(ev.users) else 0.0


def tune_trials(
    study: Any,
    name: str,
    space: dict[str, tuple],
    fixed: dict[str, Any],
    split: Any,
    metric: str,
    n_trials: int,
    timeout_s: float | None,
    suggest: Callable[[Any, str, tuple], Any],
    address: str | None = None,
    workers: int | None = None,
) -> None:
    """Run ``n_trials`` of ``study`` as Ray tasks, as many at once as the cluster has CPUs
    (or ``workers``): ask a trial, send it, tell its value when it comes back. A trial whose
    task fails is told failed and the search goes on."""
    ray = _ray()
    connect(address)
    import optuna

    task = ray.remote(num_cpus=1, max_retries=1)(_trial)
    split_ref = ray.put(split)  # once, not once per trial
    width = max(1, workers or cluster_cpus())
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    running: dict[Any, Any] = {}
    asked = 0
    while running or asked < n_trials:
        while (asked < n_trials and len(running) < width
               and (deadline is None or time.monotonic() < deadline)):  # fmt: skip
            trial = study.ask()
            params = {k: suggest(trial, k, v) for k, v in space.items()}
            running[task.remote(name, {**params, **fixed}, split_ref, metric)] = trial
            asked += 1
        if not running:
            break  # out of time before the next trial
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            trial = running.pop(ref)
            try:
                study.tell(trial, ray.get(ref))
            except ray.exceptions.RayError as exc:
                log.warning("trial %d failed: %s", trial.number, str(exc).splitlines()[0])
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if deadline is not None and time.monotonic() >= deadline:
            asked = n_trials  # ask no more; the running ones finish


def _sasrec_worker(cfg: dict[str, Any]) -> None:
    """One Ray Train worker of :func:`train_sasrec`: the same model and order as every other
    worker, its share of each batch, gradients averaged by DDP; rank 0 validates, decides when
    to stop and reports the best weights as the run's checkpoint."""
    import tempfile

    import numpy as np
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from avrec.models.sasrec import SASRecConfig, _build, train_loop

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    c = SASRecConfig(**cfg["config"])
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(c.seed)  # the same initial weights everywhere (DDP also broadcasts them)
    windows, features, val = ray.get(cfg["data"])
    net = ray.train.torch.prepare_model(_build(cfg["n_items"], c, features))

    def stop_all(stop: bool) -> bool:
        flag = torch.tensor([1 if stop else 0])
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    rng = np.random.default_rng(c.seed)  # the same order on every worker
    best_epoch, best = train_loop(
        net, c, cfg["n_items"], windows, val if rank == 0 else None, rng, rank, world, stop_all
    )
    inner = getattr(net, "module", net)
    metrics = {"best_epoch": best_epoch or 0, "best": best,
               "history": json.dumps(inner.history_)}  # fmt: skip
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(inner.state_dict(), os.path.join(tmp, "model.pt"))
        with open(os.path.join(tmp, "result.json"), "w") as f:
            json.dump(metrics, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_sasrec(
    n_items: int,
    config: Any,
    windows: Any,
    features: Any,
    val: Any,
    address: str | None = None,
    storage: str | None = None,
) -> tuple[dict, list[dict], int | None, float]:
    """Train SASRec data-parallel with Ray Train: ``config.workers`` workers (default: one
    per CPU of the cluster), one CPU each. Returns the best weights (a state dict), the
    epochs' history, the best epoch and its validation NDCG@10 (-1: not validated).

    ``storage`` is where Ray Train keeps the run and its checkpoint: a folder every node can
    reach, or a URI such as ``s3://bucket/prefix`` (default: ``AVREC_RAY_STORAGE``, else a
    temporary folder here, which serves a cluster on one machine)."""
    import tempfile

    ray = _ray()
    connect(address)
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    workers = config.workers or max(1, cluster_cpus())
    data = ray.put((windows, features, val))  # once, read by every worker
    cfg = {
        "config": config.model_dump(),
        "n_items": n_items,
        "data": data,
        "threads": 1,
    }
    own = None
    storage = storage or os.environ.get("AVREC_RAY_STORAGE")
    if storage is None:
        own = tempfile.TemporaryDirectory(prefix="avrec-train-")
        storage = own.name
    try:
        trainer = TorchTrainer(
            _sasrec_worker,
            train_loop_config=cfg,
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}
            ),  # fmt: skip
            run_config=RunConfig(
                storage_path=storage, name=f"sasrec-{os.getpid()}-{time.time_ns()}"
            ),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train ended without a model: {result.error}")
        with result.checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "model.pt"), weights_only=True)
            with open(os.path.join(folder, "result.json")) as f:
                metrics = json.load(f)
    finally:
        if own is not None:
            own.cleanup()
    best_epoch = int(metrics["best_epoch"]) or None
    return state, json.loads(metrics["history"]), best_epoch, float(metrics["best"])
