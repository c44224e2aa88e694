"""SASRec: a causal self-attention model over each user's recent items (Kang and McAuley, 2018).

The model reads the last ``max_len`` items of a user's time-ordered sequence and predicts the next
one. Details chosen for speed and accuracy on a CPU:

- item embeddings are tied with the output layer; learned positions; pre-norm Transformer layers;
- training uses every position of every sequence (long histories are cut into windows), and the
  loss is computed only at non-padding positions: a full softmax over all items (``loss="ce"``),
  a sampled softmax over ``negatives`` shared random items (``"sampled"``), or gSASRec's
  calibrated binary cross-entropy with sampled negatives (``"gbce"``, Petrov and Macdonald, 2023);
- early stopping on validation NDCG@10 (full ranking, training items excluded), keeping the best
  weights, within an optional wall-clock budget;
- CPU threads set from the machine's cores;
- ``engine="ray"``: data-parallel on a Ray cluster with Ray Train (``TorchTrainer``, one
  process per worker, gradients averaged by PyTorch DDP over gloo); every step splits the same
  global batch across the workers, so the model sees what one process would;
- ``dp_epsilon``: user-level differentially private training instead (DP-SGD with per-user
  clipping, a fixed number of epochs; :mod:`avrec.privacy.dpsgd`), the accounting in the
  manifest's ``privacy``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from pydantic import Field

from avrec.data.dataset import Dataset
from avrec.models.base import ModelConfig, Recommender, UserBatch, register_model

__all__ = ["SASRec"]

log = logging.getLogger(__name__)


class SASRecConfig(ModelConfig):
    dim: int = Field(64, gt=0)
    layers: int = Field(2, gt=0)
    heads: int = Field(2, gt=0)
    max_len: int = Field(50, gt=1, description="items of history the model reads")
    dropout: float = Field(0.2, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, gt=0)
    epochs: int = Field(200, gt=0, description="upper bound; early stopping usually ends sooner")
    patience: int = Field(5, ge=1, description="validations without improvement before stopping")
    eval_every: int = Field(2, ge=1, description="epochs between validations")
    loss: str = Field("ce", pattern="^(ce|sampled|gbce)$")
    negatives: int = Field(256, gt=0, description="sampled negatives (sampled and gbce losses)")
    gbce_t: float = Field(0.75, gt=0, le=1, description="gSASRec calibration parameter")
    time_budget_s: float | None = Field(None, gt=0, description="stop training after this long")
    threads: int | None = Field(None, gt=0, description="torch threads (default: all cores)")
    side_features: str | None = Field(
        None, description="name of the dataset's item vectors to add (projected) to item embeddings"
    )
    engine: str = Field(
        "local", pattern="^(local|ray)$",
        description="local: this process; ray: data-parallel on the Ray cluster (Ray Train)",
    )  # fmt: skip
    workers: int | None = Field(
        None, gt=0, description="Ray Train workers (default: one per CPU of the cluster)"
    )
    seed: int = 0
    dp_epsilon: float | None = Field(
        None,
        gt=0,
        description="user-level (epsilon, dp_delta)-differential privacy for the learned "
        "weights: DP-SGD with per-user clipping over one row per user, dp_epochs fixed "
        "epochs, no early stopping (avrec.privacy.dpsgd); needs engine='local', loss='ce', "
        "no side_features; None: no DP",
    )
    dp_delta: float = Field(1e-6, gt=0, lt=1, description="the delta of dp_epsilon")
    dp_clip: float = Field(1.0, gt=0, description="the bound on one user's gradient (L2)")
    dp_epochs: int = Field(10, gt=0, description="epochs under DP (fixed; no early stopping)")
    dp_physical_batch: int = Field(
        32, gt=0, description="most users per forward pass under DP (memory, not privacy)"
    )


def _windows(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """Left-padded training windows of ``max_len + 1`` items (input = [:-1], target = [1:]).

    A long sequence is cut from its end into consecutive windows that overlap by one item, so
    every transition is trained on exactly once. Items are shifted by one (0 = padding).
    """
    out = []
    for s in seqs:
        s = np.asarray(s, dtype=np.int64) + 1
        end = len(s)
        while end >= 2:
            start = max(0, end - (max_len + 1))
            w = s[start:end]
            row = np.zeros(max_len + 1, np.int64)
            row[-len(w) :] = w
            out.append(row)
            if start == 0:
                break
            end = start + 1
    return np.stack(out) if out else np.zeros((0, max_len + 1), np.int64)


def _pad_last(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    x = np.zeros((len(seqs), max_len), np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-max_len:] + 1
        if len(s):
            x[r, -len(s) :] = s
    return x


def _build(n_items: int, c: SASRecConfig, features: np.ndarray | None = None):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, c.dim, padding_idx=0)
            if features is not None:
                # content vectors (fixed) projected into the embedding space and added, so items
                # with few interactions borrow from what they are about
                self.register_buffer(
                    "features",
                    torch.from_numpy(
                        np.vstack([np.zeros((1, features.shape[1])), features]).astype(np.float32)
                    ),
                    persistent=False,
                )
                self.project = nn.Linear(features.shape[1], c.dim, bias=False)
            else:
                self.features = None
            self.positions = nn.Embedding(c.max_len, c.dim)
            self.dropout = nn.Dropout(c.dropout)
            layer = nn.TransformerEncoderLayer(
                c.dim,
                c.heads,
                dim_feedforward=c.dim * 4,
                dropout=c.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(c.dim)
            nn.init.normal_(self.items.weight, std=0.02)
            nn.init.normal_(self.positions.weight, std=0.02)
            with torch.no_grad():
                self.items.weight[0].zero_()
            mask = torch.triu(torch.ones(c.max_len, c.max_len, dtype=torch.bool), diagonal=1)
            self.register_buffer("causal", mask, persistent=False)

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            e = self.items(x)
            if self.features is not None:
                e = e + self.project(self.features[x])
            return e

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(x.shape[1], device=x.device)
            h = self.embed(x) * (c.dim**0.5) + self.positions(pos)[None]
            h = self.dropout(h)
            length = x.shape[1]
            pad = x == 0
            # Causal, and no attention to padding, except that every position may attend to
            # itself: a row with nothing to attend to would turn into NaN and poison the batch.
            eye = torch.eye(length, dtype=torch.bool)
            mask = self.causal[:length, :length][None] | (pad[:, None, :] & ~eye[None])
            mask = mask.repeat_interleave(c.heads, dim=0)
            h = self.encoder(h, mask=mask)
            return self.norm(h)

        def item_matrix(self) -> torch.Tensor:
            w = self.items.weight[1:]
            if self.features is not None:
                w = w + self.project(self.features[1:])
            return w

    return Net()


@register_model
class SASRec(Recommender):
    """Self-attentive sequential recommendation."""

    name = "sasrec"
    Config = SASRecConfig
    config: SASRecConfig
    uses_sequences = True

    def _threads(self) -> None:
        import os

        import torch

        torch.set_num_threads(self.config.threads or max(1, len(os.sched_getaffinity(0))))

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        import torch

        c = self.config
        self._threads()
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        n_items = dataset.n_items
        ptr = dataset.sequence_indptr
        seqs = [dataset.item_index[ptr[u] : ptr[u + 1]] for u in range(dataset.n_users)]
        if c.dp_epsilon is not None:
            self._fit_private(seqs, n_items)
            return
        windows = _windows(seqs, c.max_len)
        self.features_ = None
        if c.side_features is not None:
            if c.side_features not in dataset.item_features:
                from avrec.errors import ConfigError

                raise ConfigError(
                    f"side_features={c.side_features!r}: the dataset has item vectors "
                    f"{sorted(dataset.item_features)}"
                )
            f = np.asarray(dataset.item_features[c.side_features], np.float32)
            self.features_ = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        val = self._validation_set(dataset, valid, seqs)
        start = time.perf_counter()
        if c.engine == "ray":
            from avrec.compute.ray import train_sasrec

            state, self.history_, best_epoch, best = train_sasrec(
                n_items, c, windows, self.features_, val
            )
            self.net = _build(n_items, c, self.features_)
            self.net.load_state_dict(state)
        else:
            self.net = _build(n_items, c, self.features_)
            best_epoch, best = train_loop(self.net, c, n_items, windows, val, rng)
            self.history_ = self.net.history_
        if best_epoch is not None:
            self.best_epoch_ = best_epoch
        self.net.eval()
        self.train_seconds_ = time.perf_counter() - start
        self.best_valid_ndcg_ = best if best >= 0 else None

    def _fit_private(self, seqs: list[np.ndarray], n_items: int) -> None:
        """DP-SGD (avrec.privacy.dpsgd): a fixed number of epochs, no validation, the
        accounting in ``privacy``."""
        from avrec.privacy.dpsgd import train_private

        start = time.perf_counter()
        self.features_ = None
        self.net, self.privacy = train_private(seqs, n_items, self.config)
        self.history_ = self.net.history_
        self.train_seconds_ = time.perf_counter() - start
        self.best_valid_ndcg_ = None

    def _validation_set(self, train: Dataset, valid: Dataset | None, seqs: list[np.ndarray]):
        if valid is None or valid.n_events == 0:
            return None
        users = valid.user_index
        order = np.argsort(users, kind="stable")
        users, items = users[order], valid.item_index[order]
        first = np.r_[True, users[1:] != users[:-1]]
        users, items = users[first], items[first]  # one target per user: their first valid item
        if len(users) > 5000:  # a fixed sample keeps validation cheap on big datasets
            pick = np.random.default_rng(self.config.seed).choice(len(users), 5000, False)
            users, items = users[pick], items[pick]
        hist = train.seen[users]
        return [seqs[u] for u in users], hist, items

    def _scores(self, seqs: list[np.ndarray]) -> np.ndarray:
        return _scores(self.net, self.config.max_len, seqs)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        self._threads()
        seqs = batch.sequence_list()
        out = [self._scores(seqs[lo : lo + 1024]) for lo in range(0, len(seqs), 1024)]
        return np.concatenate(out) if out else np.zeros((0, len(self.items or [])), np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        if getattr(self, "features_", None) is not None:
            state["features"] = self.features_
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        import torch

        assert self.items is not None
        self.features_ = arrays.get("features")
        self.net = _build(len(self.items), self.config, self.features_)
        state = {
            k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("net.")
        }
        self.net.load_state_dict(state)
        self.net.eval()


def batch_loss(net, w, c: SASRecConfig, n_items: int, rng: np.random.Generator):  # noqa: ANN001, ANN201
    """The loss of one batch of windows ``w`` (a tensor) and the positions it covers.
    ``net`` may be wrapped (DDP): the forward pass goes through it, the item matrix
    through the module inside."""
    import torch
    import torch.nn.functional as F

    inner = getattr(net, "module", net)
    x, y = w[:, :-1], w[:, 1:]
    h = net(x)
    keep = (x > 0) & (y > 0)  # no "padding -> first item" transitions
    hk, yk = h[keep], y[keep] - 1
    items = inner.item_matrix()
    if c.loss == "ce":
        return F.cross_entropy(hk @ items.T, yk), len(yk)
    neg = torch.from_numpy(rng.integers(0, n_items, c.negatives))
    pos_logit = (hk * items[yk]).sum(-1, keepdim=True)
    neg_logit = hk @ items[neg].T
    neg_logit = neg_logit.masked_fill(neg[None] == yk[:, None], -1e9)
    if c.loss == "sampled":
        target = torch.zeros(len(yk), dtype=torch.long)
        return F.cross_entropy(torch.cat([pos_logit, neg_logit], 1), target), len(yk)
    # gBCE: calibrated positive probability
    alpha = c.negatives / max(n_items - 1, 1)
    beta = alpha * (c.gbce_t * (1 - 1 / alpha) + 1 / alpha)
    pos_prob = torch.sigmoid(pos_logit).clamp(1e-7, 1 - 1e-7)
    loss = -(torch.log(pos_prob.pow(beta)).mean() + F.logsigmoid(-neg_logit).sum(1).mean())
    return loss, len(yk)


def train_loop(
    net,  # noqa: ANN001
    c: SASRecConfig,
    n_items: int,
    windows: np.ndarray,
    val: list | None,
    rng: np.random.Generator,
    rank: int = 0,
    world: int = 1,
    stop_all=None,  # noqa: ANN001
) -> tuple[int | None, float]:
    """Epochs of Adam over shuffled windows with early stopping on validation NDCG@10; the
    best weights end in ``net`` (its history in ``net.history_``). Returns the best epoch
    and value (-1: never validated).

    Data-parallel (``world`` > 1): ``net`` is wrapped in DDP, every worker draws the same
    order (the same seed) and takes its ``rank``-th share of each global batch; the worker of
    rank 0 validates and ``stop_all(flag)`` tells every worker whether to stop."""
    import torch

    inner = getattr(net, "module", net)
    opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    neg_rng = np.random.default_rng([c.seed, rank])  # negatives: each worker its own
    best, best_state, stale, best_epoch = -1.0, None, 0, None
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(1, c.epochs + 1):
        net.train()
        order = rng.permutation(len(windows))
        total, count = 0.0, 0
        for lo in range(0, len(order), c.batch_size):
            part = order[lo : lo + c.batch_size][rank::world]
            if not len(part):
                part = order[lo : lo + 1]  # every worker steps together (DDP all-reduce)
            loss, n = batch_loss(net, torch.from_numpy(windows[part]), c, n_items, neg_rng)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * n
            count += n
        entry = {"epoch": epoch, "loss": total / max(count, 1),
                 "seconds": time.perf_counter() - start}  # fmt: skip
        out_of_time = c.time_budget_s is not None and entry["seconds"] > c.time_budget_s
        validate = val is not None and (
            epoch % c.eval_every == 0 or out_of_time or epoch == c.epochs
        )
        stop = out_of_time
        if validate and rank == 0:
            ndcg = _ndcg(inner, c.max_len, *val)
            entry["valid_ndcg@10"] = ndcg
            if ndcg > best:
                best, stale, best_epoch = ndcg, 0, epoch
                best_state = {k: v.detach().clone() for k, v in inner.state_dict().items()}
            else:
                stale += 1
            stop = stop or stale >= c.patience
        if stop_all is not None:
            stop = stop_all(stop)
        history.append(entry)
        log.info("sasrec epoch %s", entry)
        if stop:
            break
    if best_state is not None:
        inner.load_state_dict(best_state)
    inner.eval()
    inner.history_ = history
    return best_epoch, best


def _scores(net, max_len: int, seqs: list[np.ndarray]) -> np.ndarray:  # noqa: ANN001
    import torch

    x = torch.from_numpy(_pad_last(seqs, max_len))
    with torch.no_grad():
        net.eval()
        h = net(x)[:, -1]
        return (h @ net.item_matrix().T).numpy().astype(np.float32)


def _ndcg(net, max_len: int, seqs: list[np.ndarray], hist, targets: np.ndarray) -> float:  # noqa: ANN001
    """Validation NDCG@10 over full rankings, training items excluded."""
    from avrec.models.base import mask_rows

    total = 0.0
    for lo in range(0, len(seqs), 1024):
        s = _scores(net, max_len, seqs[lo : lo + 1024])
        mask_rows(s, hist[lo : lo + 1024])
        t = targets[lo : lo + 1024]
        st = s[np.arange(len(t)), t]
        rank = (s >= st[:, None]).sum(1) - 1
        total += float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).sum())
    return total / max(len(seqs), 1)
