"""How the worker pool is sized (`PoolConfig`) and what it reports about itself (`PoolStats`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

# How compiled (ONNX) workers start when `PoolConfig.start_method` is "forkserver" (the torch
# fork server's): a fresh interpreter that imports onnxruntime, numpy and Pillow only.
ONNX_START_METHOD = "spawn"


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How many workers, how requests are batched, and how long they may wait."""

    workers: int = 1
    max_batch: int = 4
    max_wait_ms: float = 0.0
    queue_size: int = 64
    timeout_s: float = 30.0
    start_timeout_s: float = 300.0
    hang_timeout_s: float = 120.0
    # How fastai workers start: the fork server preloads torch and fastai once, and forked
    # workers share those pages. Compiled (ONNX) workers never come from that server: with
    # "forkserver" they start by `ONNX_START_METHOD`; any other method is used for both.
    start_method: str = "forkserver"
    gpus: int = 0

    @classmethod
    def for_machine(cls, cpus: int, gpus: int = 0, **overrides: Any) -> PoolConfig:
        """Defaults that fit the machine: one single-thread worker per core, or one per GPU.

        On CPU, parallel processes pay and batching does not (EfficientNet's depthwise
        convolutions), so a batch forms only from what queued while every worker was busy. On
        GPU, one worker per device waits a few milliseconds to fill larger batches.
        """
        if gpus:
            base = cls(workers=gpus, max_batch=32, max_wait_ms=5.0, queue_size=256, gpus=gpus)
        else:
            base = cls(workers=max(1, cpus), max_batch=4, max_wait_ms=0.0, queue_size=64)
        return replace(base, **overrides)


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """One Ray Serve replica as the cluster reports it (`bot/remote.py`)."""

    replica: str
    state: str  # Serve's: RUNNING, STARTING, RECOVERING, STOPPING...
    version: str | None = None  # the model version its /info says it serves
    backend: str | None = None
    ongoing: int = 0  # requests it holds (waiting for a batch or in one)
    answered: int = 0


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool for /stats, /readyz and /metrics."""

    model: str
    workers_ready: int
    workers_wanted: int
    queue_depth: int
    in_flight: int
    answered: int
    rejected: int
    failed: int
    busy_refusals: int
    expired: int
    worker_restarts: int
    batches: int
    batch_sizes: dict[int, int]
    queue_ms_p50: float
    queue_ms_p95: float
    inference_ms_p50: float
    inference_ms_p95: float
    backend: str = "fastai"  # what serves `model`: "fastai", "onnx" or "onnx-int8"
    # On a Ray Serve cluster (INFERENCE_URL): its replicas, and why it cannot answer now
    # ("" when it can). The local pool leaves both empty.
    replicas: tuple[ReplicaStats, ...] = ()
    unavailable: str = ""


def percentile(samples: Sequence[float], pct: int) -> float:
    """The `pct`-th percentile of `samples` (0 when there are none)."""
    if not samples:
        return 0.0
    if len(samples) == 1:
        return float(samples[0])
    return float(statistics.quantiles(samples, n=100, method="inclusive")[pct - 1])
