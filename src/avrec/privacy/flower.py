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

**Secure aggregation** (``secure_aggregation=True``): the rounds run through Flower's
SecAgg+ (Bell et al., 2020; ``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on each
client), so the server learns only the sum of a round's updates, never one person's. Each
client masks its update with pairwise masks agreed with a few neighbours (keys shared by
Shamir's scheme, so a client that drops out is unmasked by the others) and a private mask;
the masks cancel in the sum. SecAgg+ sums integers: every update is clipped to L2 norm
``dp_clip`` (so each coordinate lies in ``[-dp_clip, dp_clip]``) and quantised by unbiased
stochastic rounding to ``2^b`` levels, ``b`` as large as the clients' number allows without
the modular sum overflowing (``b = 22`` for 943 clients). The clip is tightened by two
quantisation steps times the square root of the update's size, so the rounded update stays
within ``dp_clip``. With DP on, the server adds its noise to the unmasked sum as before. A
round whose sample is too small for SecAgg+'s threshold is halted by Flower; it is logged
(``skipped``), and training goes on.

Flower's telemetry is switched off (``FLWR_TELEMETRY_ENABLED=0``) before it is imported: a
default install sends nothing anywhere.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.errors import ConfigError
from avrec.privacy import federated

__all__ = ["run_flower", "secagg_settings"]

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


#: SecAgg+'s modulus: the masked, quantised sums are taken modulo 2^32
MODULUS = 2**32


def secagg_settings(n_clients: int, clip: float) -> dict[str, Any]:
    """SecAgg+'s parameters for a round of at most ``n_clients``: shares to about
    ``log2(n)`` neighbours (an odd number, at least 3: Bell et al.'s sparse graph), half of
    them plus one to reconstruct a dropped client's masks; quantisation to the largest
    power of two that keeps ``n`` clients' sum below the modulus; ``dp_clip`` as the
    clipping range."""
    shares = max(3, math.ceil(math.log2(max(n_clients, 2))) + 1)
    shares += 1 - shares % 2  # odd: a ring of neighbours, as many on either side
    shares = min(shares, max(n_clients, 3))
    levels = 2 ** min(30, int(math.floor(math.log2((MODULUS - 1) / (n_clients + 1)))))
    return {"num_shares": shares, "reconstruction_threshold": shares // 2 + 1,
            "clipping_range": float(clip), "quantization_range": levels,
            "modulus_range": MODULUS, "max_weight": 1.0}  # fmt: skip


def _payload(content: Any) -> int:
    """The bytes of a message's records (arrays and config values; framing left out)."""
    n = 0
    for record in content.array_records.values():
        n += sum(a.numpy().nbytes for a in record.values())
    for record in content.config_records.values():
        for v in record.values():
            for x in v if isinstance(v, list) else [v]:
                n += len(x) if isinstance(x, bytes | str) else 8
    return n


def _count_bytes(msg: Any, context: Any, call_next: Any) -> Any:
    """A client mod around SecAgg+'s: what the client sends over the protocol's stages.
    The total since the last masked vector (the previous round's unmasking, this round's
    keys, shares and vector) travels in that vector's metrics, which reach the server."""
    from flwr.app import ConfigRecord

    reply = call_next(msg, context)
    sent = _payload(reply.content)
    state = context.state.config_records.setdefault("avrec.bytes", ConfigRecord({"n": 0}))
    state["n"] = int(state["n"]) + sent
    metrics = reply.content.config_records.get("fitres.metrics")
    if metrics is not None:  # the stage that carries the masked vector
        metrics["bytes_up"] = int(state["n"])
        state["n"] = 0
    return reply


def _secure_client_app(rows: _Rows, config: Any, n_items: int) -> Any:
    flwr = _flower()
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    settings = {k: getattr(config, k) for k in ("alpha", "regularization", "dp_epsilon",
                                                 "dp_clip", "secure_aggregation")}  # fmt: skip
    # stochastic rounding moves each coordinate by less than one step (2 clip / levels):
    # clipped that much tighter, the quantised update stays within dp_clip, the bound the
    # server's noise is calibrated to
    n_clients = len(rows.indptr) - 1
    d = n_items * config.factors + config.factors**2 + n_items
    levels = secagg_settings(n_clients, config.dp_clip)["quantization_range"]
    settings["dp_clip"] = config.dp_clip * (1.0 - 2.0 * math.sqrt(d) / levels)

    class Client(NumPyClient):
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def fit(self, parameters: list[np.ndarray], _config: dict) -> tuple:
            from types import SimpleNamespace

            items, weights = rows.row(self.partition)
            _, update = federated.client_round(parameters[0], items, weights,
                                               SimpleNamespace(**settings))  # fmt: skip
            return [a.astype(np.float32) for a in update.arrays()], 1, {}

    def client_fn(context: Any) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    return flwr.clientapp.ClientApp(client_fn=client_fn, mods=[_count_bytes, secaggplus_mod])


def _secure_server_app(
    n_clients: int, n_items: int, config: Any, result: dict[str, Any],
    on_round: Callable[[int, np.ndarray, dict[str, Any]], None] | None,
) -> Any:  # fmt: skip
    flwr = _flower()
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerConfig
    from flwr.server.compat import LegacyContext
    from flwr.server.strategy import Strategy
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    class Rounds(Strategy):
        """The rounds of :mod:`avrec.privacy.federated` as a Flower strategy: it samples
        the clients and steps from the sum SecAgg+ reveals."""

        def __init__(self) -> None:
            self.rng = np.random.default_rng(config.seed)
            self.y = federated.initial_factors(n_items, config.factors, config.seed)
            self.log: list[dict[str, Any]] = []
            self.start = 0.0
            self.open: dict[int, int] = {}  # rounds sampled and not yet aggregated

        def close_skipped(self) -> None:
            """Rounds SecAgg+ halted (too few clients for its threshold): logged, not lost."""
            for r, n in sorted(self.open.items()):
                log.warning("federated round %d: SecAgg+ halted with %d clients sampled; "
                            "no step", r, n)  # fmt: skip
                self.log.append({"round": r, "clients": 0, "sampled": n, "skipped": True,
                                 "bytes_down": 0, "bytes_up": 0, "seconds": 0.0})  # fmt: skip
            self.open.clear()

        def initialize_parameters(self, client_manager: Any) -> Any:
            return ndarrays_to_parameters([self.y])

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list:
            deadline = time.monotonic() + REGISTER_S
            while len(proxies := client_manager.all()) < n_clients:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(proxies)} of {n_clients} Flower nodes "
                                       "registered")  # fmt: skip
                time.sleep(0.1)
            ids = sorted(proxies)
            self.close_skipped()
            self.start = time.perf_counter()
            chosen = federated.sample_clients(len(ids), config.fraction, self.rng)
            self.open[server_round] = len(chosen)
            ins = FitIns(ndarrays_to_parameters([self.y]), {})
            return [(proxies[ids[i]], ins) for i in chosen]

        def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple:
            if failures:
                raise RuntimeError(f"{len(failures)} Flower clients failed: {failures[0]}")
            self.open.pop(server_round, None)
            if not results:
                return None, {}
            mean = parameters_to_ndarrays(results[0][1].parameters)  # SecAgg+'s average
            n = len(results)
            total = federated.ClientUpdate(*(np.asarray(a, np.float64) * n for a in mean))
            self.y = federated.finish_round(self.y, total, config, self.rng)
            up = max(int(r.metrics.get("bytes_up", 0)) for _, r in results)
            entry = {"round": server_round, "clients": n, "bytes_down": int(self.y.nbytes),
                     "bytes_up": up, "seconds": time.perf_counter() - self.start}  # fmt: skip
            self.log.append(entry)
            log.info("federated round %d/%d (SecAgg+): %d clients, %.1f s", server_round,
                     config.rounds, n, entry["seconds"])  # fmt: skip
            if on_round is not None:
                on_round(server_round, self.y, entry)
            return ndarrays_to_parameters([self.y]), {}

        def configure_evaluate(
            self, server_round: int, parameters: Any, client_manager: Any
        ) -> list:
            return []

        def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> None:
            return None

    app = flwr.serverapp.ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        strategy = Rounds()
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds),
                               strategy=strategy)  # fmt: skip
        workflow = SecAggPlusWorkflow(**secagg_settings(n_clients, config.dp_clip))
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
        strategy.close_skipped()
        result["y"] = strategy.y
        result["log"] = strategy.log

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
        secure = getattr(config, "secure_aggregation", False)
        server = _secure_server_app if secure else _server_app
        flwr.simulation.run_simulation(
            server_app=server(x.shape[0], x.shape[1], config, result, on_round),
            client_app=(
                _secure_client_app(_Rows(x), config, x.shape[1])
                if secure
                else _client_app(_Rows(x), config)
            ),  # fmt: skip
            num_supernodes=x.shape[0],
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    if "y" not in result:
        raise RuntimeError("the Flower simulation ended without a result (see its log)")
    return result["y"], result["log"]
