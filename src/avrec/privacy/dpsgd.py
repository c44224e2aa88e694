"""Differentially private training of SASRec: DP-SGD with per-user clipping (Opacus).

``SASRec(dp_epsilon=...)`` trains here instead of in :func:`avrec.models.sasrec.train_loop`.
The unit of privacy is the **user**: the training set has exactly one row per user (the last
``max_len + 1`` items of their sequence, :func:`~avrec.models.sasrec._pad_last`), never the
several windows a long history gives the non-private route, so clipping one row's gradient
bounds one person's influence on a step. Each step draws users by Poisson sampling (rate
``1 / batches per epoch``), clips each user's gradient to ``dp_clip`` in L2, sums, adds Gaussian
noise and updates with Adam; the RDP accountant picks the noise for ``(dp_epsilon, dp_delta)``
over ``dp_epochs`` epochs and reports what was spent.

**What is private:** all network weights (item and position embeddings, attention, feed-forward
and norms); the saved model is post-processing of them. Scoring reads each user's own recent
items, as the non-private model does, and the model keeps training histories for that, as
every avrec model does; those are the user's own data, not what the guarantee covers.

**What is not counted, so not done:** early stopping on validation chooses the weights by
looking at the data, which the accountant does not charge, so the private route trains a fixed
number of epochs (``dp_epochs``), ignores ``time_budget_s`` and does not validate. The noise
comes from torch's default generator, not a cryptographically secure one (Opacus'
``secure_mode``), which the manifest says (``secure_rng``).

**Opacus pitfalls on the standard network, and how :class:`DPSASRecNet` avoids them**
(Opacus 1.6, each one measured):

- ``nn.TransformerEncoderLayer``'s attention is not supported, and Opacus'
  ``DPMultiheadAttention``, its replacement, gives wrong outputs with ``batch_first=True``
  and refuses SASRec's per-user masks. The blocks here are
  built from ``nn.Linear`` and ``nn.LayerNorm`` around ``F.scaled_dot_product_attention``
  (no parameters of its own), the same maths as the pre-norm encoder layer.
- The output layer is tied to the item embeddings. Used as ``h @ items.weight.T`` outside a
  module call, that use of the weight has no hook and its share of the per-user gradient is
  silently dropped. Here it is :class:`TiedItemOutput`, a module with its own grad sampler,
  and Opacus adds both uses of the shared weight.
- Positions looked up with one ``[L]`` index tensor give a per-sample gradient whose "batch"
  dimension is ``L``: an opaque error at the step, or silently wrong gradients when a batch
  happens to hold ``L`` users. Here positions are expanded to ``[B, L]`` first.
- A Poisson draw can be empty, and the step still has to happen (the accountant counts it);
  without a forward pass it fails ("per sample gradient is not initialized"), so the empty
  batch goes through the network like any other: a zero loss, the noise all the same.

:meth:`DPSASRecNet.to_net` copies the trained weights back into the standard network of
:func:`avrec.models.sasrec._build`, so scoring, ``save`` and ``load`` are those of SASRec.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from opacus.grad_sample import register_grad_sampler
from torch import nn

from avrec.errors import ConfigError

if TYPE_CHECKING:
    from avrec.models.sasrec import SASRecConfig

__all__ = ["DPSASRecNet", "TiedItemOutput", "per_user_loss", "train_private"]

log = logging.getLogger(__name__)

MECHANISM = "DP-SGD (Opacus, per-user clipping, Poisson sampling, RDP accountant)"


class _Block(nn.Module):
    """``nn.TransformerEncoderLayer(d, heads, 4 d, dropout, "gelu", batch_first=True,
    norm_first=True)`` from layers Opacus has grad samplers for."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff1, self.ff2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=~blocked[:, None], dropout_p=self.p if self.training else 0.0
        )
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.norm2(x))))))


class TiedItemOutput(nn.Module):
    """Scores with the item-embedding matrix (tied output layer), one column per row of it:
    column 0 is the padding row (always 0), column ``i + 1`` item ``i``.

    A module, so that Opacus' hooks see this use of the shared weight (see the module
    docstring); ``weight`` is the same ``Parameter`` as ``items.weight``. The padding column
    is kept (and dropped by the caller) so that the per-user gradient comes out in the
    weight's shape without another copy of it, the largest tensor of a step.
    """

    def __init__(self, items: nn.Embedding) -> None:
        super().__init__()
        self.weight = items.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight)


@register_grad_sampler(TiedItemOutput)
def _tied_grad_sample(
    layer: TiedItemOutput, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    # [B, n_items + 1, dim]; row 0 is 0, as the padding column's scores are dropped
    return {layer.weight: torch.bmm(backprops.transpose(1, 2), activations[0])}


def _key_pairs(layers: int) -> list[tuple[str, str]]:
    """(standard Net key, DPSASRecNet key) for every learned tensor."""
    pairs = [(k, k) for k in ("items.weight", "positions.weight", "norm.weight", "norm.bias")]
    names = {
        "self_attn.in_proj_weight": "qkv.weight",
        "self_attn.in_proj_bias": "qkv.bias",
        "self_attn.out_proj.weight": "out.weight",
        "self_attn.out_proj.bias": "out.bias",
        "linear1.weight": "ff1.weight",
        "linear1.bias": "ff1.bias",
        "linear2.weight": "ff2.weight",
        "linear2.bias": "ff2.bias",
        "norm1.weight": "norm1.weight",
        "norm1.bias": "norm1.bias",
        "norm2.weight": "norm2.weight",
        "norm2.bias": "norm2.bias",
    }
    for i in range(layers):
        pairs += [(f"encoder.layers.{i}.{a}", f"blocks.{i}.{b}") for a, b in names.items()]
    return pairs


class DPSASRecNet(nn.Module):
    """SASRec's network (no side features) in a form Opacus computes per-user gradients for.

    Same parameters and outputs as :func:`avrec.models.sasrec._build`'s ``Net``;
    :meth:`from_net` and :meth:`to_net` copy weights between the two.
    """

    def __init__(
        self, n_items: int, dim: int, layers: int, heads: int, max_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.dim, self.n_layers = dim, layers
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.output = TiedItemOutput(self.items)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    @classmethod
    def from_config(cls, n_items: int, c: SASRecConfig) -> DPSASRecNet:
        return cls(n_items, c.dim, c.layers, c.heads, c.max_len, c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, dim]`` for item ids ``x`` (``[B, L]``, 0 = padding)."""
        x = x.contiguous()
        b, length = x.shape
        # one row of positions per user: Opacus takes dim 0 of a layer's input as the batch
        pos = torch.arange(length, device=x.device).expand(b, length).contiguous()
        h = self.dropout(self.items(x) * self.dim**0.5 + self.positions(pos))
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), 1)
        blocked = causal[None] | ((x == 0)[:, None, :] & ~eye[None])  # as in Net.forward
        for block in self.blocks:
            h = block(h, blocked)
        return self.norm(h)

    @classmethod
    def from_net(cls, net: nn.Module, c: SASRecConfig) -> DPSASRecNet:
        """A copy of the standard network's weights (``net`` from ``_build``, no features)."""
        if getattr(net, "features", None) is not None:
            raise ConfigError("DP-SGD SASRec has no side_features")
        new = cls.from_config(net.items.num_embeddings - 1, c)
        src = net.state_dict()
        state = {dp: src[std].detach().clone() for std, dp in _key_pairs(c.layers)}
        missing, unexpected = new.load_state_dict(state, strict=False)
        assert missing == ["output.weight"] and not unexpected, (missing, unexpected)
        return new

    def to_net(self, c: SASRecConfig) -> nn.Module:
        """The standard network of :func:`avrec.models.sasrec._build` with these weights."""
        from avrec.models.sasrec import _build

        net = _build(self.items.num_embeddings - 1, c)
        src = self.state_dict()
        net.load_state_dict({std: src[dp].detach().clone() for std, dp in _key_pairs(c.layers)})
        return net


def per_user_loss(net: DPSASRecNet, w: torch.Tensor) -> torch.Tensor:
    """Full-softmax cross-entropy of each next item, averaged within each user's row.

    Args:
        net: the network (or the module inside Opacus' wrapper).
        w: ``[B, max_len + 1]`` item ids, left-padded with 0; input ``w[:, :-1]``, target
            ``w[:, 1:]``.

    Returns:
        ``[B]`` losses (0 for a row with no transition).
    """
    x, y = w[:, :-1], w[:, 1:]
    keep = (x > 0) & (y > 0)  # no "padding -> first item" transitions
    logits = net.output(net(x))[..., 1:]  # [B, L, n_items]: no padding column
    tok = F.cross_entropy(logits.flatten(0, 1), (y - 1).clamp(min=0).flatten(), reduction="none")
    return (tok.view_as(y) * keep).sum(1) / keep.sum(1).clamp(min=1)


def train_private(
    seqs: list[np.ndarray],
    n_items: int,
    config: SASRecConfig,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train SASRec with user-level ``(dp_epsilon, dp_delta)``-DP (DP-SGD, Opacus).

    Args:
        seqs: each user's time-ordered item indices (0-based), one array per user.
        n_items: the catalogue size.
        config: a SASRec config with ``dp_epsilon`` set; ``batch_size`` is the expected
            (Poisson) number of users per step, ``dp_physical_batch`` the most users per
            forward pass, ``dp_clip`` the per-user gradient bound, ``dp_epochs`` the epochs.
        progress: called after each epoch with ``epoch``, ``loss``, ``epsilon``, ``seconds``.

    Returns:
        The trained standard network (as :func:`avrec.models.sasrec._build` makes it, in eval
        mode, ``history_`` set) and the accounting for the model's manifest.

    Raises:
        ConfigError: ``dp_epsilon`` is not set, or the config asks for what this route lacks
            (``engine`` other than ``"local"``, ``loss`` other than ``"ce"``,
            ``side_features``).
    """
    from opacus import PrivacyEngine
    from opacus.utils.batch_memory_manager import BatchMemoryManager
    from torch.utils.data import DataLoader, TensorDataset

    from avrec.models.sasrec import _pad_last

    c = config
    if c.dp_epsilon is None:
        raise ConfigError("train_private needs dp_epsilon")
    if c.engine != "local":
        raise ConfigError(
            f"engine={c.engine!r} with dp_epsilon: DP-SGD SASRec trains in this process only "
            "(engine='local')"
        )
    if c.loss != "ce":
        raise ConfigError(
            f"loss={c.loss!r} with dp_epsilon: DP-SGD SASRec has only the full-softmax loss "
            "(loss='ce')"
        )
    if c.side_features is not None:
        raise ConfigError(
            f"side_features={c.side_features!r} with dp_epsilon: DP-SGD SASRec has no side "
            "features; drop one of them"
        )
    torch.manual_seed(c.seed)
    rows = torch.from_numpy(_pad_last(seqs, c.max_len + 1))  # one row per user
    if len(rows) == 0:
        raise ConfigError("dp_epsilon: no users to train on")
    net = DPSASRecNet.from_config(n_items, c)
    opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    loader = DataLoader(
        TensorDataset(rows),
        batch_size=min(c.batch_size, len(rows)),
        generator=torch.Generator().manual_seed(c.seed),  # the Poisson draws
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # said in the manifest
        # a looser bound than wider orders would give is still a valid bound
        warnings.filterwarnings("ignore", message="Optimal order is the")
        # Opacus' hooks on the first layers, whose inputs (ids) need no gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        engine = PrivacyEngine(accountant="rdp")
        model, opt, loader = engine.make_private_with_epsilon(
            module=net,
            optimizer=opt,
            data_loader=loader,
            target_epsilon=c.dp_epsilon,
            target_delta=c.dp_delta,
            epochs=c.dp_epochs,
            max_grad_norm=c.dp_clip,
        )
        history: list[dict[str, float]] = []
        start = time.perf_counter()
        for epoch in range(1, c.dp_epochs + 1):
            model.train()
            with BatchMemoryManager(
                data_loader=loader, max_physical_batch_size=c.dp_physical_batch, optimizer=opt
            ) as batches:
                loss = _epoch(net, opt, batches)
            entry = {
                "epoch": epoch,
                "loss": loss,
                "epsilon": float(engine.get_epsilon(c.dp_delta)),
                "seconds": time.perf_counter() - start,
            }
            history.append(entry)
            log.info("sasrec dp epoch %s", entry)
            if progress is not None:
                progress(entry)
        spent = float(engine.get_epsilon(c.dp_delta))
    net.eval()
    out = net.to_net(c)
    out.eval()
    out.history_ = history
    privacy = {
        "mechanism": MECHANISM,
        "epsilon": spent,
        "target_epsilon": float(c.dp_epsilon),
        "delta": float(c.dp_delta),
        "unit": "user",
        "max_grad_norm": float(c.dp_clip),
        "noise_multiplier": float(opt.noise_multiplier),
        "sample_rate": float(loader.sample_rate),
        "epochs": int(c.dp_epochs),
        "steps": sum(int(h[2]) for h in engine.accountant.history),
        "rows_per_user": 1,
        "history_items": int(c.max_len),
        "secure_rng": False,
    }
    return out, privacy


def _epoch(net: DPSASRecNet, opt: Any, batches: Any) -> float:
    """One pass over Opacus' physical batches; the mean per-user loss."""
    total, count = 0.0, 0
    for (w,) in batches:
        per_user = per_user_loss(net, w)
        # mean <-> Opacus' loss_reduction="mean"; an empty Poisson draw still steps, noise
        # and all, with a zero loss
        loss = per_user.mean() if len(w) else per_user.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.items.weight[0].zero_()  # the noise reaches the padding row too
        total += float(per_user.detach().sum())
        count += len(w)
    return total / max(count, 1)
