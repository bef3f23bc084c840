"""Code that runs inside a worker process (load the learner once, then classify batches), and
the typed messages it exchanges with the pool over its pipe.

The bot process imports this module only to name `serve` as a process target and to build a
`WorkerConfig`; torch and fastai are imported inside the functions, never at module level.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from model.types import ClassifierError, ImageRejected, LabelScore, Prediction

if TYPE_CHECKING:
    from model.compiled import CompiledModel

logger = logging.getLogger(__name__)

# The libraries an ONNX worker must not have imported (they cost hundreds of MB per process).
HEAVY_MODULES = ("torch", "fastai", "timm", "torchvision")
FASTAI_BACKEND = "fastai"


# -- the messages on the pipe between the pool (model/workers.py) and a worker ----------------
#
# Bot → worker: `Batch`, then `Stop` once. Worker → bot: `Ready` or `LoadFailed` once, then one
# `BatchResult` per `Batch`. All are small picklable values; both sides match them by type, and
# a message of any other type is an `UnexpectedMessage` error. Nothing here imports torch.


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
    """Worker → bot: the model is loaded and warmed up; its name and labels in output order,
    the backend serving it ("fastai", "onnx", "onnx-int8"), and which of `HEAVY_MODULES` the
    worker has imported (none for an ONNX worker)."""

    model: str
    pid: int
    labels: tuple[str, ...]
    backend: str = FASTAI_BACKEND
    modules: tuple[str, ...] = ()


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


# -- the worker process -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to load and run the model; picklable, sent once at start."""

    models_dir: Path
    model_path: Path | None = None
    # The sha256 `model_path` was checked against by whoever chose it (the registry's card,
    # or the hash the bot took of MODEL_PATH at start): the worker hashes the very bytes it
    # unpickles and refuses others. The pool fills it in for any `model_path`; None (not
    # checked) is left for the bundled default a worker exports itself.
    model_sha256: str | None = None
    threads: int = 1
    # True: exactly `threads` (a Ray Serve replica holds that many CPUs of a shared node);
    # False: an ONNX session may use every core this process may run on.
    exact_threads: bool = False
    max_pixels: int = 50_000_000
    top_k: int = 3
    device: str = "cpu"
    log_level: str = "WARNING"
    # Serve this compiled (ONNX) form instead of the learner: the worker then imports neither
    # torch nor fastai, and `model_path` is not read.
    compiled: CompiledModel | None = None

    @property
    def backend(self) -> str:
        """What serves this config: "fastai", or the compiled form's kind."""
        return self.compiled.backend if self.compiled is not None else FASTAI_BACKEND


class ModelMismatch(Exception):
    """The model file's bytes are not the ones that were checked; they are not unpickled."""


def model_name(path: Path, sha256: str) -> str:
    """A short, stable name for a model file: its stem (a registry version's folder name)
    plus the start of its sha256."""
    stem = path.parent.name if path.name == "model.pkl" else path.stem
    return f"{stem}@{sha256[:8]}"


def read_checked(path: Path, expected_sha256: str | None) -> tuple[bytes, str]:
    """The file's bytes, read once, and their sha256; `ModelMismatch` when they do not hash
    to `expected_sha256` (unless that is None).

    Unpickling runs code, so what is unpickled must be these bytes, never a second read of
    the path: the file could change in between.
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ModelMismatch(
            f"{path} is not the file that was checked: its sha256 is {digest[:12]}…, "
            f"expected {expected_sha256[:12]}… (it changed after it was chosen); not loaded"
        )
    return data, digest


def preload() -> None:
    """Import the heavy libraries; run in the fork server so workers share these pages."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fastai.vision.all  # noqa: F401
        import timm  # noqa: F401
        import torch  # noqa: F401
    import gc

    # Keep the collector off these objects in forked workers: walking them would write to
    # (and so copy) the pages the workers share with this process.
    gc.collect()
    gc.freeze()


def load(source: Path | bytes, name: str = "") -> Any:
    """Load an exported fastai learner (a file, or its bytes) for CPU inference, progress bars
    off; `name` is for the log.

    Learners from other machines and older fastai releases are repaired where possible (see
    model/compat.py); a learner that is not a single-label classifier is refused.
    """
    from fastai.callback.progress import ProgressCallback

    from model.compat import load_learner_compat

    learn, _ = load_learner_compat(source, name)
    if ProgressCallback in [type(cb) for cb in learn.cbs]:
        learn.remove_cb(ProgressCallback)
    learn.model.eval()
    return learn


class Serving(Protocol):
    """What `serve` needs of an engine: `Engine` (fastai) or `model.onnxengine.OnnxEngine`."""

    name: str
    labels: tuple[str, ...]

    def warm_up(self) -> None: ...

    def classify(self, items: Sequence[BatchItem]) -> tuple[list[ItemResult], float, float]: ...


def heavy_modules() -> tuple[str, ...]:
    """Which of `HEAVY_MODULES` this process has imported."""
    import sys

    return tuple(name for name in HEAVY_MODULES if name in sys.modules)


class Engine:
    """A loaded learner plus the fastest exact way to run it on a batch of decoded images."""

    def __init__(self, config: WorkerConfig) -> None:
        import torch

        from model.default import ensure_default_learner

        self.config = config
        path = config.model_path or ensure_default_learner(config.models_dir)
        data, self.sha256 = read_checked(path, config.model_sha256)
        self.name = model_name(path, self.sha256)
        self.learn = load(data, path.name)
        del data
        self.labels = tuple(str(label) for label in self.learn.dls.vocab)
        self.device = torch.device(config.device)
        self.learn.model.to(self.device)
        self.learn.dls.to(self.device)
        # The validation pipelines (split_idx=1): deterministic resize/crop, then normalise.
        self.after_item = self.learn.dls.valid.after_item
        self.after_batch = self.learn.dls.valid.after_batch
        # An exported learner's pipelines lose their split; without it Resize crops at random.
        self.after_item.split_idx = self.after_batch.split_idx = 1
        self.fast = True

    def warm_up(self) -> None:
        """Run both paths once; keep the fast one only if it matches fastai's own output."""
        import torch
        from PIL import Image

        image = Image.new("RGB", (320, 240))
        image.paste((200, 120, 40), (40, 30, 200, 180))
        fast = self.probabilities([image])
        self.fast = False
        reference = self.probabilities([image])
        difference = float((fast - reference).abs().max())
        self.fast = difference < 1e-4
        if not self.fast:
            logger.warning(
                "model %s: fast preprocessing differs from fastai's by %.2g; using test_dl",
                self.name,
                difference,
            )
        torch.set_grad_enabled(False)

    def probabilities(self, images: list[Any]) -> Any:
        """Class probabilities, one row per image, as a CPU tensor."""
        import torch
        from fastai.vision.core import PILImage
        from fastcore.basics import getcallable

        if not self.fast:
            dl = self.learn.dls.test_dl(images, num_workers=0, device=self.device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probabilities, _ = self.learn.get_preds(dl=dl)
            return probabilities
        # What test_dl + get_preds do, without building a DataLoader and running callbacks
        # per call: fastai's own validation item and batch transforms, then one forward pass.
        tensors = [self.after_item((PILImage(image),))[0] for image in images]
        batch = torch.stack(tensors).to(self.device)
        batch = self.after_batch((type(tensors[0])(batch),))[0]
        with torch.inference_mode():
            logits = self.learn.model(batch)
            # get_preds applies the loss function's activation (softmax for classifiers).
            activation = getcallable(self.learn.loss_func, "activation")
            return activation(logits).float().cpu()

    def classify(self, items: Sequence[BatchItem]) -> tuple[list[ItemResult], float, float]:
        """See `classify_batch`: the top-k by `torch.topk`."""

        def ranked(images: list[Any], k: int) -> list[list[tuple[int, float]]]:
            values, indices = self.probabilities(images).topk(k, dim=1)
            return [
                [(int(index), float(value)) for value, index in zip(row_v, row_i, strict=True)]
                for row_v, row_i in zip(values, indices, strict=True)
            ]

        return classify_batch(items, self.config, self.name, self.labels, ranked)


Ranker = Callable[[list[Any], int], list[list[tuple[int, float]]]]


def classify_batch(
    items: Sequence[BatchItem],
    config: WorkerConfig,
    name: str,
    labels: Sequence[str],
    ranked: Ranker,
) -> tuple[list[ItemResult], float, float]:
    """Decode each item, run the valid ones as one batch: the results in the items' order, the
    seconds spent decoding and the seconds spent in the model.

    `ranked(images, k)` is the engine's: for each decoded image, its k most probable label
    indices with their probabilities, best first. Both engines share the rest, so that they
    reject, order and name results alike.
    """
    from model.images import decode_image

    started = time.perf_counter()
    results: dict[int, Prediction | ClassifierError] = {}
    decoded: list[tuple[int, Any]] = []
    for request_id, data in items:
        try:
            decoded.append((request_id, decode_image(data, config.max_pixels)))
        except ImageRejected as exc:
            results[request_id] = exc
    decode_s = time.perf_counter() - started
    if decoded:
        k = min(config.top_k, len(labels))
        rows = ranked([image for _, image in decoded], k)
        for (request_id, image), row in zip(decoded, rows, strict=True):
            scores = tuple(LabelScore(labels[index], value) for index, value in row)
            results[request_id] = Prediction(scores, name, image.width, image.height)
    infer_s = time.perf_counter() - started - decode_s
    answers = [ItemResult(request_id, results[request_id]) for request_id, _ in items]
    return answers, decode_s, infer_s


TRIM_EVERY_S = 2.0


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None where there is no glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def serve(conn: Connection, config: WorkerConfig) -> None:
    """Process target: load and warm up the model, send `Ready` (or `LoadFailed`), then answer
    each `Batch` with a `BatchResult` until `Stop`; see model/messages.py."""
    # Ctrl-C in a terminal reaches the whole process group; the pool decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s worker %(process)d: %(message)s"
    )
    # Library deprecation chatter (torch.jit, fastai) would repeat on every worker start.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from PIL import Image

        # decode_image checks the pixel count on the header itself, with the configured limit.
        Image.MAX_IMAGE_PIXELS = None
        engine = _engine(config)
        engine.warm_up()
    except Exception as exc:
        logger.exception("could not load the model")
        conn.send(LoadFailed(f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(Ready(engine.name, os.getpid(), engine.labels, config.backend, heavy_modules()))
    logger.info(
        "serving %s (%s) with %d thread(s) on %s",
        engine.name,
        config.backend,
        config.threads,
        config.device,
    )
    trim = _malloc_trim()
    batches_since_trim = 0
    while True:
        try:
            if trim is not None and batches_since_trim and not conn.poll(TRIM_EVERY_S):
                # Idle for a while after some work: hand freed batch buffers back to the OS
                # (glibc keeps them otherwise, and a worker's memory would only ever grow to
                # its busiest moment).
                trim(0)
                batches_since_trim = 0
                continue
            message = conn.recv()
        except (EOFError, OSError):
            return  # the pool went away
        batches_since_trim += 1
        match message:
            case Batch():
                conn.send(_answer(engine, message))
            case Stop():
                conn.close()
                return
            case _:
                raise UnexpectedMessage(message, "Batch or Stop")


def _engine(config: WorkerConfig) -> Serving:
    """The engine for `config`: ONNX for a compiled form (torch is never imported then), else
    the learner on fastai."""
    if config.compiled is not None:
        from model.onnxengine import OnnxEngine

        return OnnxEngine(config)
    import torch

    torch.set_num_threads(config.threads)  # before the model loads: workers × threads ≤ cores
    return Engine(config)


def _answer(engine: Serving, batch: Batch) -> BatchResult:
    """Classify a batch; a model failure must answer every item with an error, not hang it."""
    try:
        results, decode_s, infer_s = engine.classify(batch.items)
    except Exception as exc:
        logger.exception("batch %d failed", batch.batch_id)
        error = ClassifierError(f"the model failed: {type(exc).__name__}")
        results = [ItemResult(item.request_id, error) for item in batch.items]
        decode_s = infer_s = 0.0
    return BatchResult(batch.batch_id, tuple(results), decode_s, infer_s)
