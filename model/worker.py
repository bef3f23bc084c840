"""Code that runs inside a worker process: load the learner once, then classify image bytes.

The bot process imports this module only so that its functions can be named to the process
pool; torch and fastai are imported inside the functions, never at module level.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.types import LabelScore, Prediction

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to load and run the model; picklable, sent once at start."""

    models_dir: Path
    model_path: Path | None = None
    threads: int = 1
    max_pixels: int = 50_000_000
    top_k: int = 3


@dataclass
class _Loaded:
    learn: Any
    labels: list[str]
    name: str
    config: WorkerConfig


_loaded: _Loaded | None = None  # this process's learner, set once by `initialize`


def model_name(path: Path) -> str:
    """A short, stable name for a model file: its stem plus the start of its sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.stem}@{digest.hexdigest()[:8]}"


def initialize(config: WorkerConfig) -> None:
    """Process-pool initializer: set threads, then load the learner (exporting the default)."""
    global _loaded
    # Ctrl-C in a terminal reaches the whole process group; the bot decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(config.threads))
    # Library deprecation chatter (torch.jit, fastai) would repeat on every worker start.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import torch

    torch.set_num_threads(config.threads)
    from PIL import Image

    # decode_image checks the pixel count on the header itself, with the configured limit.
    Image.MAX_IMAGE_PIXELS = None

    from model.default import ensure_default_learner

    path = config.model_path or ensure_default_learner(config.models_dir)
    learn = load(path)
    _loaded = _Loaded(learn, [str(label) for label in learn.dls.vocab], model_name(path), config)
    logger.info("worker %d loaded %s (%d labels)", os.getpid(), _loaded.name, len(_loaded.labels))


def load(path: Path) -> Any:
    """Load an exported fastai learner for CPU inference, progress bars off."""
    from fastai.callback.progress import ProgressCallback
    from fastai.learner import load_learner

    with warnings.catch_warnings():
        # load_learner warns that unpickling can run code; we only load files we were told to.
        warnings.simplefilter("ignore")
        learn = load_learner(path, cpu=True)
    if ProgressCallback in [type(cb) for cb in learn.cbs]:
        learn.remove_cb(ProgressCallback)
    learn.model.eval()
    return learn


def classify(data: bytes) -> Prediction:
    """Decode and validate `data`, run the learner, return the top-k labels."""
    from model.images import decode_image

    if _loaded is None:
        raise RuntimeError("worker used before initialize()")
    image = decode_image(data, _loaded.config.max_pixels)
    return _predict(image)


def _predict(image: Any) -> Prediction:
    import torch

    assert _loaded is not None
    learn = _loaded.learn
    dl = learn.dls.test_dl([image], num_workers=0)
    with torch.inference_mode():
        probabilities, _ = learn.get_preds(dl=dl)
    values, indices = probabilities[0].topk(min(_loaded.config.top_k, len(_loaded.labels)))
    scores = tuple(
        LabelScore(_loaded.labels[int(index)], float(value))
        for value, index in zip(values, indices, strict=True)
    )
    return Prediction(scores, _loaded.name, image.width, image.height)


def warm_up() -> str:
    """Run one forward pass on a blank image so the first user does not pay for it."""
    from PIL import Image

    if _loaded is None:
        raise RuntimeError("worker used before initialize()")
    _predict(Image.new("RGB", (320, 240), (128, 128, 128)))
    return _loaded.name
