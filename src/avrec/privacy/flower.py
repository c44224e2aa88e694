"""Federated MF as a Flower simulation on Ray: one virtual client (a Flower SuperNode) per
person, the rounds of :mod:`avrec.privacy.federated` as a Flower ServerApp.

Flower (``flwr``) runs its simulation engine on Ray. The driver joins the cluster the way
every heavy job of avrec does (:func:`avrec.compute.ray.connect`: ``RAY_ADDRESS``, or a
local cluster); Flower reuses that connection and places one client actor per CPU. Flower
is installed without its ``simulation`` extra, whose exact Ray pin (2.55.1) would clash with
avrec's (``ray[data]>=2.60``): see the Makefile.

What a client holds and sends:

- its events (in the simulation, each actor process holds the partition table and a client
  reads its own row, ``partition-id``), and its factors, kept in Flower's per-node state
  (``context.state``) across rounds; neither leaves it;
- it receives the item factors and answers with its :class:`~avrec.privacy.federated.
  ClientUpdate`, clipped when DP is on. The server sums the answers and steps.

Flower's telemetry is switched off (``FLWR_TELEMETRY_ENABLED=0``) before it is imported: a
default install sends nothing anywhere.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.errors import ConfigError
from avrec.privacy import federated

__all__ = ["run_flower"]

log = logging.getLogger(__name__)

#: messages sent to the clients at once (bounds the driver's memory: each carries Y)
CHUNK = 128
#: seconds to wait for every simulated node to register
REGISTER_S = 180.0


def _flower() -> Any:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        import flwr.app
        import flwr.clientapp
        import flwr.serverapp
        import flwr.simulation
    except ImportError:
        raise ConfigError(
            "engine='flower' needs Flower: pip install --no-deps flwr==1.42.0 and its "
            "dependencies (make dev installs them), or use engine='inprocess'"
        ) from None
    for name in ("flwr", "flwr.simulation"):
        logging.getLogger(name).setLevel(logging.ERROR)  # after the import, which resets it
    return flwr


class _Rows:
    """The partition table: client ``p`` holds row ``p`` of the events (items, weights)."""

    def __init__(self, x: sp.csr_matrix) -> None:
        self.indptr = x.indptr.copy()
        self.indices = x.indices.copy()
        self.data = x.data.astype(np.float32)

    def row(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[p], self.indptr[p + 1]
        return self.indices[lo:hi], self.data[lo:hi]


def _client_app(rows: _Rows, config: Any) -> Any:
    flwr = _flower()
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    app = flwr.clientapp.ClientApp()
    settings = {k: getattr(config, k) for k in ("alpha", "regularization", "dp_epsilon",
                                                 "dp_clip")}  # fmt: skip

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        from types import SimpleNamespace

        cfg = SimpleNamespace(**settings)
        p = int(context.node_config["partition-id"])
        y = msg.content["arrays"]["y"].numpy()
        items, weights = rows.row(p)
        x, update = federated.client_round(y, items, weights, cfg)
        context.state["factors"] = ArrayRecord({"x": Array(x)})  # stays on the client
        arrays = ArrayRecord({
            "grad": Array(update.grad.astype(np.float32)),
            "outer": Array(update.outer),
            "curvature": Array(update.curvature.astype(np.float32)),
        })  # fmt: skip
        sent = sum(a.numpy().nbytes for a in arrays.values())
        return Message(
            RecordDict({"arrays": arrays, "metrics": MetricRecord({"bytes": int(sent)})}),
            reply_to=msg,
        )

    return app


def _server_app(
    n_clients: int, n_items: int, config: Any, result: dict[str, Any],
    on_round: Callable[[int, np.ndarray, dict[str, Any]], None] | None,
) -> Any:  # fmt: skip
    flwr = _flower()
    from flwr.app import Array, ArrayRecord, Message, MessageType, RecordDict

    app = flwr.serverapp.ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        deadline = time.monotonic() + REGISTER_S
        while len(nodes := sorted(grid.get_node_ids())) < n_clients:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {n_clients} Flower nodes registered")
            time.sleep(0.1)
        rng = np.random.default_rng(config.seed)
        y = federated.initial_factors(n_items, config.factors, config.seed)
        rounds: list[dict[str, Any]] = []
        for r in range(1, config.rounds + 1):
            start = time.perf_counter()
            chosen = federated.sample_clients(len(nodes), config.fraction, rng)
            down = Array(y)
            total: federated.ClientUpdate | None = None
            up = 0
            for lo in range(0, len(chosen), CHUNK):
                msgs = [
                    Message(
                        RecordDict({"arrays": ArrayRecord({"y": down})}),
                        dst_node_id=nodes[i],
                        message_type=MessageType.TRAIN,
                        group_id=str(r),
                    )  # fmt: skip
                    for i in chosen[lo : lo + CHUNK]
                ]
                for reply in grid.send_and_receive(msgs):
                    if reply.has_error():
                        raise RuntimeError(f"a Flower client failed: {reply.error.reason}")
                    a = reply.content["arrays"]
                    update = federated.ClientUpdate(
                        a["grad"].numpy().astype(np.float64),
                        a["outer"].numpy(),
                        a["curvature"].numpy().astype(np.float64),
                    )
                    up = max(up, int(reply.content["metrics"]["bytes"]))
                    total = update if total is None else total + update
            if total is None:
                continue
            y = federated.finish_round(y, total, config, rng)
            entry = {"round": r, "clients": int(len(chosen)), "bytes_down": int(y.nbytes),
                     "bytes_up": up, "seconds": time.perf_counter() - start}  # fmt: skip
            rounds.append(entry)
            log.info("federated round %d/%d: %d clients, %.1f s", r, config.rounds,
                     len(chosen), entry["seconds"])  # fmt: skip
            if on_round is not None:
                on_round(r, y, entry)
        result["y"] = y
        result["log"] = rounds

    return app


_LOCK = threading.Lock()  # one simulation at a time in a process (Flower's engine is global)


def run_flower(
    x: sp.csr_matrix,
    config: Any,
    on_round: Callable[[int, np.ndarray, dict[str, Any]], None] | None = None,
    address: str | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Train the item factors from ``x`` (people x items, weights) as a Flower simulation
    with one client per row. Returns the item factors and the rounds' log."""
    flwr = _flower()
    from avrec.compute.ray import connect

    result: dict[str, Any] = {}
    with _LOCK:
        connect(address)  # Flower reuses the connection (and disconnects at the end)
        flwr.simulation.run_simulation(
            server_app=_server_app(x.shape[0], x.shape[1], config, result, on_round),
            client_app=_client_app(_Rows(x), config),
            num_supernodes=x.shape[0],
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    if "y" not in result:
        raise RuntimeError("the Flower simulation ended without a result (see its log)")
    return result["y"], result["log"]
