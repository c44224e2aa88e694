"""Differentially private EASE: the bounded Gram matrix, the noise calibrated by OpenDP,
the accounting in the manifest and in ``avrec evaluate``."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.models import create_model, load_model
from avrec.privacy.training import bound_rows, gaussian_scale, private_gram


def test_rows_are_bounded_to_a_uniform_sample():
    x = sp.csr_matrix(np.ones((3, 40)))
    x[2, 5:] = 0
    out = bound_rows(sp.csr_matrix(x), 10, np.random.default_rng(0))
    assert np.diff(out.indptr).tolist() == [10, 10, 5]
    seen = set()
    for seed in range(50):
        seen |= set(bound_rows(sp.csr_matrix(x), 10, np.random.default_rng(seed))[0].indices)
    assert len(seen) == 40  # every item can be drawn


def test_the_gram_noise_is_calibrated_and_symmetric():
    x = sp.random(500, 60, density=0.1, random_state=2, format="csr")
    g, acct = private_gram(x, epsilon=2.0, delta=1e-6, items_per_user=5, seed=3)
    assert np.allclose(g, g.T)
    assert acct["l2_sensitivity"] == math.sqrt(15) and acct["unit"] == "user"
    assert acct["noise_scale"] == gaussian_scale(2.0, 1e-6, math.sqrt(15))
    assert gaussian_scale(8.0, 1e-6, 1.0) < gaussian_scale(1.0, 1e-6, 1.0)  # more epsilon
    xb = bound_rows(x, 5, np.random.default_rng(3))
    exact = (xb.T @ xb).toarray()
    exact[np.diag_indices(60)] += acct["ridge_added"]  # the ridge that keeps it invertible
    noise = (g - exact)[np.triu_indices(60)]
    assert 0.9 < noise.std() / acct["noise_scale"] < 1.1 and abs(noise.mean()) < 0.2 * noise.std()


def test_a_private_ease_keeps_its_accounting(tmp_path):
    rows = [(f"u{u}", f"i{(u * 3 + j) % 15}", float(j)) for u in range(40) for j in range(6)]
    tiny_dataset = Dataset.from_events(
        pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    )
    m = create_model("ease", l2=10.0, dp_epsilon=4.0, dp_items_per_user=3, dp_seed=0)
    m.fit(tiny_dataset)
    assert m.privacy["epsilon"] == 4.0 and m.privacy["items_per_user"] == 3
    again = load_model(m.save(tmp_path / "ease"))
    assert again.privacy == m.privacy
    plain = create_model("ease", l2=10.0).fit(tiny_dataset)
    assert not hasattr(plain, "privacy") or plain.privacy is None
    assert not np.allclose(plain.weights, m.weights)  # the noise is in the weights
