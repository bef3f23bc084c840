"""The messages on the pipe between the pool (`model.pool`) and a worker (`model.worker`).

Bot → worker: `Batch`, then `Stop` once. Worker → bot: `Ready` or `LoadFailed` once, then one
`BatchResult` per `Batch`. All are small picklable values; both sides match them by type, and
a message of any other type is an `UnexpectedMessage` error. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from model.types import ClassifierError, Prediction


class BatchItem(NamedTuple):
    """One request in a batch: the pool's id for it and the raw image bytes."""

    request_id: int
    image: bytes


class ItemResult(NamedTuple):
    """The answer to one `BatchItem`: a prediction, or the error to raise to its caller."""

    request_id: int
    result: Prediction | ClassifierError


@dataclass(frozen=True, slots=True)
class Batch:
    """Bot → worker: classify these images as one batch."""

    batch_id: int
    items: tuple[BatchItem, ...]


@dataclass(frozen=True, slots=True)
class Stop:
    """Bot → worker: exit now (the pool sends it after the worker's last batch)."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Worker → bot: the model is loaded and warmed up; its name and labels in output order."""

    model: str
    pid: int
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """Worker → bot: the model could not be loaded (the worker exits); `reason` is for people."""

    reason: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Worker → bot: one `ItemResult` per item of the batch, in its order, and the timings."""

    batch_id: int
    results: tuple[ItemResult, ...]
    decode_s: float
    infer_s: float


class UnexpectedMessage(RuntimeError):
    """One side of the pipe received a message the protocol does not allow at that point."""

    def __init__(self, received: object, expected: str) -> None:
        # The type only: a message's repr could hold megabytes of image bytes.
        super().__init__(f"expected {expected}, received {type(received).__name__}")
