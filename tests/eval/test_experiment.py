from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.eval import Experiment, FixedSplit, LeaveOneOut, bootstrap_ci, paired_test
from avrec.eval.experiment import item_buckets, user_group_labels
from avrec.eval.report import write_report
from avrec.models import create_model


def clustered(n_users=300, seed=0) -> Dataset:
    """Two taste groups with disjoint item sets: a co-occurrence model should beat popularity."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2
        items = rng.choice(np.arange(group * 50, group * 50 + 50), size=12, replace=False)
        for k, i in enumerate(items):
            rows.append((f"u{u}", f"i{i}", float(k)))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    return Dataset.from_events(ev, weighting=EventWeighting.binary())


def test_experiment_table_significance_and_breakdowns(tmp_path):
    exp = Experiment(
        LeaveOneOut(),
        [create_model("pop"), create_model("itemknn")],
        metrics=["hr", "ndcg", "auc", "coverage", "ild"],
        ks=[5, 10],
        n_bootstrap=200,
    )
    res = exp.run(clustered())
    assert res.value("itemknn", "ndcg@10") > res.value("pop", "ndcg@10")
    row = res.table.filter((pl.col("model") == "pop") & (pl.col("metric") == "ndcg@10"))
    assert row["significant_vs_best"][0] is True and row["ci_low"][0] <= row["value"][0]
    best = res.table.filter((pl.col("model") == "itemknn") & (pl.col("metric") == "ndcg@10"))
    assert best["is_best"][0] is True
    assert set(res.by_user_group["group"]) == {"6-20"}  # everyone has 10 history items
    assert res.meta["protocol"]["ranking"] == "full ranking, history excluded"
    paths = write_report(res, tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "ndcg@10" in md and "**" in md and "metrics.png" in md
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    doc = json.loads(paths["json"].read_text())
    assert {"model", "metric", "k", "value", "ci_low", "ci_high"} <= set(doc["results"][0])
    assert doc["dataset"]["users"] == 300 and doc["seed"] == 0


def test_sampled_evaluation_is_labelled():
    res = Experiment(
        LeaveOneOut(), [create_model("pop")], metrics=["hr@10"], sampled=20, n_bootstrap=0
    ).run(clustered())
    assert res.meta["protocol"]["ranking"].startswith("sampled-20")
    full = Experiment(LeaveOneOut(), [create_model("pop")], metrics=["hr@10"], n_bootstrap=0).run(
        clustered()
    )
    # with 20 sampled negatives a hit in the top 10 is far easier than against all items
    assert res.value("pop", "hr@10") > full.value("pop", "hr@10")


def test_stats_helpers():
    rng = np.random.default_rng(0)
    a = rng.random(500)
    mean, lo, hi = bootstrap_ci(a, n_boot=500)
    assert lo < mean < hi and abs(mean - a.mean()) < 1e-12
    same = paired_test(a, a)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    t = paired_test(a + 0.05 + rng.normal(0, 0.01, 500), a)
    assert t["p_value"] < 0.01 and t["ci_low"] > 0
    null = paired_test(a + rng.normal(0, 0.01, 500), a)
    assert null["p_value"] > 0.01 and null["ci_low"] < 0 < null["ci_high"]


def test_groups_and_buckets():
    labels = user_group_labels(np.array([0, 1, 5, 6, 20, 21, 100, 101]))
    assert labels.tolist() == ["0", "1-5", "1-5", "6-20", "6-20", "21-100", "21-100", "101+"]
    b = item_buckets(np.array([100.0, 10, 10, 10, 5, 5, 5, 0]))
    assert b[0] == "head" and b[-1] == "unseen" and "tail" in b.tolist()


@pytest.mark.realdata
def test_reference_figures_movielens(data_dir):
    """Popularity and EASE reproduce the README's reference figures to three decimals."""
    from avrec.config import Settings
    from avrec.data.loaders import load_dataset

    ds = load_dataset("movielens-100k", settings=Settings(data_dir=data_dir))
    split = FixedSplit(data_dir / "splits" / "movielens-100k.loo.tsv")
    res = Experiment(
        split,
        {"pop": create_model("pop"), "ease": create_model("ease", l2=300)},
        metrics=["hr@10", "ndcg@10"],
        n_bootstrap=100,
    ).run(ds)
    assert round(res.value("pop", "hr@10"), 4) == 0.0838
    assert round(res.value("pop", "ndcg@10"), 4) == 0.0432
    assert round(res.value("ease", "hr@10"), 4) == 0.1400
    assert round(res.value("ease", "ndcg@10"), 4) == 0.0728


@pytest.mark.realdata
@pytest.mark.slow
def test_reference_figures_microlens(data_dir):
    from avrec.config import Settings
    from avrec.data.loaders import load_dataset

    ds = load_dataset("microlens-50k", settings=Settings(data_dir=data_dir))
    split = FixedSplit(data_dir / "splits" / "microlens-50k.loo.tsv")
    res = Experiment(split, [create_model("pop")], metrics=["hr@10", "ndcg@10"], n_bootstrap=0).run(
        ds
    )
    assert round(res.value("pop", "hr@10"), 4) == 0.0024
    assert round(res.value("pop", "ndcg@10"), 4) == 0.0013


def test_sampled_negatives_are_distinct_and_exclude_history():
    from avrec.eval.evaluate import evaluate_model
    from avrec.eval.metrics import AUC

    ds = clustered()
    split = LeaveOneOut().split(ds)
    model = create_model("pop").fit(split.train)
    n = 30
    ev = evaluate_model(model, split, [AUC()], sampled=n)
    # every user ranks its target against exactly n negatives: AUC steps are multiples of 1/n
    auc = ev.per_user["auc"]
    assert np.allclose(np.round(auc * n * 2) / (n * 2), auc)
    assert ev.per_user["auc"].size == len(ev.users)


def test_auc_of_a_model_that_scores_only_candidates_equals_the_tied_full_ranking():
    """Issue 15: a model that leaves items at -inf (a pipeline's non-candidates) gets the AUC
    of its full ranking with those items tied last, the same as if it had given them one
    low finite score, not a figure that drops them."""
    from avrec.eval.evaluate import evaluate_model
    from avrec.eval.metrics import AUC, NDCG

    class Partial:
        name = "partial"

        def __init__(self, model, floor):
            self.model, self.floor = model, floor

        def _score_batch(self, batch):
            s = np.array(self.model._score_batch(batch), np.float32)
            cut = np.partition(s, -20, axis=1)[:, -20:-19]  # keep each user's top 20
            return np.where(s >= cut, s, self.floor).astype(np.float32)

    ds = clustered()
    split = LeaveOneOut().split(ds)
    knn = create_model("itemknn").fit(split.train)
    metrics = [AUC(), NDCG(10)]
    unscored = evaluate_model(Partial(knn, -np.inf), split, metrics)
    floored = evaluate_model(Partial(knn, -1e9), split, metrics)
    np.testing.assert_allclose(unscored.per_user["auc"], floored.per_user["auc"])
    np.testing.assert_allclose(unscored.per_user["ndcg@10"], floored.per_user["ndcg@10"])
    assert unscored.per_user["auc"].mean() > 0.5
    sampled = evaluate_model(Partial(knn, -np.inf), split, metrics, sampled=30)
    sampled_floor = evaluate_model(Partial(knn, -1e9), split, metrics, sampled=30)
    np.testing.assert_allclose(sampled.per_user["auc"], sampled_floor.per_user["auc"])


def test_gauc_comparison_uses_weights_and_zero_bootstrap_works():
    res = Experiment(
        LeaveOneOut(),
        [create_model("pop"), create_model("itemknn")],
        metrics=["gauc", "ndcg@10"],
        n_bootstrap=0,
    ).run(clustered())
    row = res.comparisons.filter(pl.col("metric") == "gauc").row(0, named=True)
    assert row["best"] == "itemknn" and row["diff"] > 0


def test_candidates_restrict_the_ranking_to_cold_items():
    """The cold-start protocol: only the held-out items are ranked."""
    from avrec.eval import ColdItemSplit

    ds = clustered()
    rng = np.random.default_rng(0)
    ids = ds.items.lookup(np.arange(ds.n_items))
    x = rng.normal(0, 0.3, (ds.n_items, 8)).astype(np.float32)
    x[np.arange(ds.n_items), [int(i[1:]) // 50 for i in ids]] += 3.0  # the taste group
    ds.set_item_features("fused", x)
    split = ColdItemSplit(fraction=0.3, seed=1).split(ds)
    cold = np.diff(split.train.binary().tocsc().indptr) == 0
    models = {"pop": create_model("pop"), "content": create_model("content")}
    full = Experiment(split, models, ["hr@10"], n_bootstrap=0).run()
    among = Experiment(split, models, ["hr@10"], n_bootstrap=0, candidates=cold)
    res = among.run()
    assert "among" in among.protocol and f"{int(cold.sum())}" in among.protocol
    # popularity never ranks a never-played item into the top 10; content does, more so when
    # only cold items compete
    assert full.value("pop", "hr@10") == 0.0
    assert res.value("content", "hr@10") > full.value("content", "hr@10") > 0.0
    # targets outside the candidates never hit
    warm_only = Experiment(split, models, ["hr@10"], n_bootstrap=0, candidates=~cold).run()
    assert warm_only.value("content", "hr@10") == 0.0
