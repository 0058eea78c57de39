"""The prediction service's Prometheus metrics (``GET /metrics``), in a registry of its own.

Every metric about requests and models carries the dataset (the model's name in the Open Inference Protocol); the
prediction log's counters are the process's own (one writer for every dataset). A service of several worker
processes (``SERVING_WORKERS``) runs prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the
service for its workers): ``GET /metrics`` on any worker sums the counters of all, and the log gauges of the live ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class ServingMetrics:
    """The service's Prometheus metrics, in a registry of its own."""

    registry: CollectorRegistry
    requests: Counter
    records: Counter
    latency: Histogram
    model_info: Gauge
    loads: Counter
    log_written: Gauge
    log_dropped: Gauge
    log_queued: Gauge
    log_backpressure: Counter
    multiprocess: bool = False

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every worker in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def retire(self, dataset: str, name: str, version: str) -> None:
        """The version is no longer served (multiprocess mode keeps a value per process: it goes to 0)."""
        if self.multiprocess:
            self.model_info.labels(dataset, name, version).set(0)
        else:
            self.model_info.remove(dataset, name, version)

    @classmethod
    def create(cls) -> ServingMetrics:
        multi = bool(os.environ.get(MULTIPROCESS_ENV))
        reg = CollectorRegistry()
        return cls(
            registry=reg,
            requests=Counter(
                "mlops_predict_requests",
                "Prediction requests by dataset and HTTP status",
                ["dataset", "status"],
                registry=reg,
            ),
            records=Counter(
                "mlops_predicted_records",
                "Records answered, by dataset and model version",
                ["dataset", "model_version"],
                registry=reg,
            ),
            latency=Histogram(
                "mlops_predict_latency_seconds",
                "Time to answer a prediction request (all outcomes), by dataset",
                ["dataset"],
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            model_info=Gauge(
                "mlops_model_info",
                "1 for each model version being served",
                ["dataset", "name", "version"],
                registry=reg,
                multiprocess_mode="livemax",
            ),
            loads=Counter(
                "mlops_model_loads", "Model version loads by dataset and outcome", ["dataset", "outcome"], registry=reg
            ),
            log_written=Gauge(
                "mlops_prediction_log_written_records",
                "Records written to the prediction log",
                registry=reg,
                multiprocess_mode="livesum",
            ),
            log_dropped=Gauge(
                "mlops_prediction_log_dropped_records",
                "Records that could not be logged (queue full or database unreachable)",
                registry=reg,
                multiprocess_mode="livesum",
            ),
            log_queued=Gauge(
                "mlops_prediction_log_queued_records",
                "Records waiting to be written",
                registry=reg,
                multiprocess_mode="livesum",
            ),
            log_backpressure=Counter(
                "mlops_prediction_log_backpressure",
                "Requests held back while the prediction log caught up",
                registry=reg,
            ),
            multiprocess=multi,
        )
