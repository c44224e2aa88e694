"""The media stage of ``avrec analyze`` on a real two-node Ray cluster on this machine (one CPU
each, Ray's own ``cluster_utils.Cluster``): the same results as this machine's engine, and a
node killed during the run loses no finished item and the run finishes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avrec.config import ContentConfig
from avrec.content.analyze import ContentAnalyzer, ItemInput
from avrec.content.store import ContentStore

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared"
POSTERS = SHARED / "datasets" / "movielens-100k" / "posters"
pytestmark = [pytest.mark.realdata, pytest.mark.timeout(600)]
CONFIG = ContentConfig(speech=False, ocr=False, audio_features=False)


def _posters(n: int) -> list[ItemInput]:
    if not POSTERS.is_dir():
        pytest.skip("../shared/datasets/movielens-100k/posters not found")
    files = sorted(POSTERS.glob("*.jpg"))[:n]
    return [ItemInput(f.stem, title=f"Poster {f.stem}", media={"image": str(f)}) for f in files]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_two_nodes_give_the_results_of_this_machine(tmp_path, cluster):
    items = _posters(8)
    ids = [it.item_id for it in items]
    with ContentStore(tmp_path / "ray.db") as store:
        rep = ContentAnalyzer(CONFIG, store, engine="ray", address=cluster.address).run(items)
        assert rep.media_analysed == len(items) and rep.analysed == len(items)
        assert store.status_counts() == {"ok": len(items)}
        on_ray = store.vectors("visual", ids), store.vectors("fused", ids)
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2
    with ContentStore(tmp_path / "local.db") as store:
        ContentAnalyzer(CONFIG, store, workers=1).run(items)
        here = store.vectors("visual", ids), store.vectors("fused", ids)
    np.testing.assert_allclose(on_ray[0], here[0], atol=1e-4)
    np.testing.assert_allclose(on_ray[1], here[1], atol=1e-4)


def test_a_node_killed_during_the_run_loses_nothing_and_the_run_finishes(tmp_path, cluster):
    items = _posters(30)
    worker = next(iter(cluster.worker_nodes))
    seen: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "media":
            seen.append(done)
            if done == 4 and worker in cluster.worker_nodes:  # items committed, others held
                cluster.remove_node(worker, allow_graceful=False)

    with ContentStore(tmp_path / "c.db") as store:
        analyzer = ContentAnalyzer(CONFIG, store, engine="ray", address=cluster.address)
        rep = analyzer.run(items, progress=progress)
        assert worker not in cluster.worker_nodes  # the kill happened mid-run
        assert rep.media_analysed == len(items) and not rep.errors
        assert store.status_counts() == {"ok": len(items)}
        assert seen[-1] == len(items)
    # the run again: everything is cached, nothing is analysed twice
    with ContentStore(tmp_path / "c.db") as store:
        again = ContentAnalyzer(CONFIG, store, engine="ray", address=cluster.address).run(items)
        assert again.media_cached == len(items) and again.media_analysed == 0
    cluster.add_node(num_cpus=1)  # for whatever runs after
    cluster.wait_for_nodes()


def test_precompute_on_the_cluster_keeps_the_pages_this_process_would(tmp_path, cluster):
    from avrec.models import load_model
    from avrec.pipeline.precompute import PAGE_KIND, precompute
    from avrec.storage import open_store
    from avrec.workspace import Workspace
    from tests.cli.test_cli import song_workspace

    ws = Workspace.find(song_workspace(tmp_path))
    rec = ws.store.active_model("pipeline")
    model = load_model(rec.path)
    label = f"{rec.name}-v{rec.version}"
    users = list(model.users.ids)
    stores = {name: open_store(f"sqlite:///{tmp_path / name}.db") for name in ("ray", "here")}
    rep = precompute(model, stores["ray"], label, k=6, batch=7, engine="ray",
                     bundle_path=str(rec.path), address=cluster.address)  # fmt: skip
    assert rep.pages == len(users) == 40
    precompute(model, stores["here"], label, k=6, batch=7)
    for u in users:
        a, b = (stores[n].get_state(PAGE_KIND, u) for n in ("ray", "here"))
        assert a["ids"] == b["ids"] and a["model"] == label
        assert a["explanation"] == b["explanation"]
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    for s in stores.values():
        s.close()
    ws.close()


def test_tune_runs_its_trials_on_the_cluster(cluster):
    from avrec.data.weighting import EventWeighting
    from avrec.eval.splits import LeaveOneOut
    from avrec.models.tuning import tune
    from avrec.testing.contract import toy_dataset

    split = LeaveOneOut().split(toy_dataset().with_weighting(EventWeighting.binary()))
    res = tune("itemknn", split, n_trials=4, engine="ray", address=cluster.address)
    assert len(res.trials) == 4 and all(t["value"] is not None for t in res.trials)
    assert res.best_value == max(t["value"] for t in res.trials)
    assert res.best_model is not None and res.best_model.is_fitted
    assert res.best_model.tuned_["search"] == "optuna TPE on Ray"
    here = tune("itemknn", split, n_trials=1, fixed=dict(res.best_params))  # the same values
    assert abs(here.best_value - res.best_value) < 1e-9  # a trial on the cluster = one here


def test_sasrec_trains_data_parallel_on_the_cluster(cluster, tmp_path):
    """Ray Train, two workers on the two nodes: the same batches split in two, gradients
    averaged, so training follows the one-process run; the bundle saves and loads."""
    from avrec.eval.splits import LeaveOneOut
    from avrec.models import SASRec, load_model
    from avrec.testing.contract import toy_dataset

    split = LeaveOneOut(order="time").split(toy_dataset(n_users=200))
    valid = split.full.select(split.masks["valid"])
    params = dict(dim=16, layers=1, heads=1, max_len=8, epochs=6, eval_every=1, patience=6,
                  batch_size=64, dropout=0.0)  # fmt: skip
    here = SASRec(**params).fit(split.train, valid)
    there = SASRec(**params, engine="ray", workers=2).fit(split.train, valid)
    assert [e["epoch"] for e in there.history_] == [e["epoch"] for e in here.history_]
    # the same data, the same initial weights, the same global batches: the losses agree
    for a, b in zip(here.history_, there.history_, strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.02 * a["loss"], (a, b)
    assert there.history_[-1]["loss"] < there.history_[0]["loss"]  # it learned
    assert there.best_valid_ndcg_ is not None
    assert abs(there.best_valid_ndcg_ - here.best_valid_ndcg_) < 0.05
    users = list(split.train.users.ids[:5])
    again = load_model(there.save(tmp_path / "sasrec"))
    np.testing.assert_allclose(again.score(users), there.score(users), rtol=1e-5)


def test_text_is_encoded_on_the_cluster_as_here(tmp_path, cluster, monkeypatch):
    """Text-only items: the passages go to the cluster's actors in batches, each actor with
    its own encoder; the vectors are this machine's, and a second run encodes nothing."""
    import avrec.content.analyze as analyze

    monkeypatch.setattr(analyze, "RAY_TEXT_MIN", 8)  # a few dozen texts go to the cluster
    items = [ItemInput(f"t{i}", title=f"Song {i}", description=f"A calm piano piece, number {i}")
             for i in range(40)]  # fmt: skip
    ids = [it.item_id for it in items]
    with ContentStore(tmp_path / "ray.db") as store:
        rep = ContentAnalyzer(CONFIG, store, engine="ray", address=cluster.address).run(items)
        assert rep.segments_encoded >= 40 and not rep.errors
        on_ray = store.vectors("text", ids)
        again = ContentAnalyzer(CONFIG, store, engine="ray", address=cluster.address).run(items)
        assert again.segments_encoded == 0
    with ContentStore(tmp_path / "local.db") as store:
        ContentAnalyzer(CONFIG, store, workers=1).run(items)
        here = store.vectors("text", ids)
    np.testing.assert_allclose(on_ray, here, atol=1e-3)
