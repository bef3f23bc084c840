"""Prometheus metrics: what handlers count, plus the pool's own state read at scrape time."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from model.feedback import VerdictKind
from model.pool import PoolStats

if TYPE_CHECKING:
    from bot.inbox import InboxCounts

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

OUTCOMES = ("answered", "rejected", "too_big", "busy", "unavailable", "failed")


class Metrics:
    """One registry per application (tests build several side by side)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.photos = Counter(
            "verdict_photos",
            "Photos and image files received, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.photos.labels(outcome)
        self.photo_seconds = Histogram(
            "verdict_photo_seconds",
            "From receiving a photo to sending the answer (download, queue, model, reply).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "verdict_queue_seconds",
            "Time a request waited for a worker.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "verdict_inference_seconds",
            "Time a worker spent on one batch (decode and forward pass).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "verdict_batch_size",
            "Requests per forward pass.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.verdicts = Counter(
            "verdict_verdicts",
            "Verdicts users gave on predictions, by kind.",
            ["kind"],
            registry=self.registry,
        )
        for kind in VerdictKind:
            self.verdicts.labels(kind)

    def watch_pool(self, stats: Callable[[], PoolStats]) -> None:
        """Expose the pool's gauges and counters, read from `stats()` at each scrape."""
        self.registry.register(_PoolCollector(stats))

    def watch_inbox(self, counts: InboxCounts) -> None:
        """Export the inbox's counts (received, done, replayed, pending...) when scraped."""
        self.registry.register(_InboxCollector(counts))

    def observe_batch(self, size: int, queue_s: list[float], inference_s: float) -> None:
        """Called by the pool after each batch."""
        self.batch_size.observe(size)
        self.inference_seconds.observe(inference_s)
        for waited in queue_s:
            self.queue_seconds.observe(waited)


class _PoolCollector(Collector):
    def __init__(self, stats: Callable[[], PoolStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily(
            "verdict_workers_ready",
            "Worker processes serving the current model.",
            stats.workers_ready,
        )
        yield GaugeMetricFamily(
            "verdict_queue_depth", "Requests waiting for a worker.", stats.queue_depth
        )
        if stats.replicas or stats.unavailable:  # classifying on a Ray Serve cluster
            replicas = GaugeMetricFamily(
                "verdict_cluster_replicas",
                "Ray Serve replicas by state and the model version they serve.",
                labels=["state", "version"],
            )
            states = Tally((r.state, r.version or "") for r in stats.replicas)
            for (state, version), count in sorted(states.items()):
                replicas.add_metric([state, version], count)
            yield replicas
            ongoing = GaugeMetricFamily(
                "verdict_cluster_replica_ongoing",
                "Requests each Ray Serve replica holds (queued for a batch or in one).",
                labels=["replica", "version"],
            )
            for r in stats.replicas:
                ongoing.add_metric([r.replica, r.version or ""], r.ongoing)
            yield ongoing
            yield GaugeMetricFamily(
                "verdict_cluster_available",
                "1 when the inference cluster can answer, 0 when it cannot.",
                0 if stats.unavailable else 1,
            )
        yield GaugeMetricFamily(
            "verdict_in_flight", "Requests a worker is processing.", stats.in_flight
        )
        yield CounterMetricFamily(
            "verdict_worker_restarts", "Workers replaced after dying.", stats.worker_restarts
        )
        yield CounterMetricFamily(
            "verdict_busy_refusals",
            "Requests refused because the queue was full.",
            stats.busy_refusals,
        )
        yield CounterMetricFamily(
            "verdict_expired", "Requests dropped after waiting past their deadline.", stats.expired
        )
        info = GaugeMetricFamily("verdict_model_info", "The model being served.", labels=["model"])
        info.add_metric([stats.model], 1)
        yield info


class _InboxCollector(Collector):
    def __init__(self, counts: InboxCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts
        for name, value, text in (
            ("received", counts.received, "Updates kept in the inbox before being confirmed."),
            ("done", counts.done, "Updates marked done in the inbox once handled."),
            ("replayed", counts.replayed, "Updates a crash left unhandled, handled at start."),
            ("duplicates", counts.duplicates, "Copies of kept updates Telegram sent again."),
            ("unkept", counts.unkept, "Updates handled without being kept (disk failing)."),
        ):
            yield CounterMetricFamily(f"verdict_inbox_{name}", text, value=value)
        yield GaugeMetricFamily(
            "verdict_inbox_pending", "Updates kept and not yet handled.", value=counts.pending
        )
