"""`python -m training fit PATH`: fine-tune a new model version with fastai and register it.

The steps: check and prepare the images (training/data.py, no torch yet, so bad data fails
fast), resolve the architecture (its pretrained weights must be at hand: the default ships
them, others are downloaded once, with a bounded wait), make sure the bundled default is
registered (the first version, always there to switch back to), then `vision_learner` +
`fine_tune` with fastai's progress bars, interpret the validation set (training/report.py),
export the learner and register it with its card (model/registry.py).

The learner is built from an architecture callable that lives in `model/arch.py`, so that the
exported file refers only to importable modules (fastai stores `learn.arch` in the pickle).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from model.registry import ModelCard, Registry

if TYPE_CHECKING:
    from training.data import Dataset

# fastai's presizing (the fastai book, chapter 5): items are resized to about twice the final
# size, then cropped and augmented to it on the batch, so augmentations have room to work.
PRESIZE_FACTOR = 460 / 224
DEFAULT_EPOCHS = 4
DEFAULT_FREEZE_EPOCHS = 1
DEFAULT_LR = 2e-3  # fastai's own `fine_tune` default; --lr find runs `lr_find` instead
DEFAULT_BS = 16  # small datasets of phone photos: more, smaller steps per epoch
DEFAULT_VALID_PCT = 0.2
DEFAULT_SEED = 42
DOWNLOAD_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 5.0
DEFAULT_ARCH_NAMES = frozenset(
    {"default", "efficientnet_lite0", "efficientnet-lite0", "tf_efficientnet_lite0", "lite0"}
)


class FitError(Exception):
    """The fit cannot go ahead; the message says why, for people (the CLI exits 2)."""


class ArchitectureError(FitError):
    """The architecture is unknown, or its pretrained weights cannot be had."""


@dataclass(frozen=True)
class FitOptions:
    """Everything `fit` can be told; the defaults suit a small dataset of phone photos."""

    images_dir: Path
    data_dir: Path
    epochs: int = DEFAULT_EPOCHS
    freeze_epochs: int = DEFAULT_FREEZE_EPOCHS
    lr: float | None = DEFAULT_LR  # None: use lr_find's suggestion
    size: int = 224
    bs: int = DEFAULT_BS
    valid_pct: float = DEFAULT_VALID_PCT
    seed: int = DEFAULT_SEED
    arch: str = "efficientnet_lite0"
    threads: int | None = None  # None: $OMP_NUM_THREADS, else every core this process may use
    activate: bool = True
    with_feedback: bool = False
    reviewed_only: bool = False
    compile: bool = True  # compile the new version to ONNX (training/compile.py) before use
    min_images: int = 3  # training.data.MIN_IMAGES_PER_LABEL (imported late: it loads Pillow)

    @property
    def models_dir(self) -> Path:
        """Where the registry lives."""
        return self.data_dir / "models"

    @property
    def presize(self) -> int:
        """The size items are resized to before the batch crops and augments them."""
        return round(self.size * PRESIZE_FACTOR)


@dataclass(frozen=True)
class Arch:
    """A resolved architecture: what to record, what to give `vision_learner`, its stats."""

    name: str
    arch: Any  # a callable (torchvision, model/arch.py) or a timm model name
    mean: tuple[float, ...]
    std: tuple[float, ...]


def default_threads() -> int:
    """$OMP_NUM_THREADS when set (the bot sets 1 for a retrain), else the usable cores."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def say(line: str = "") -> None:
    """Print a line for the person (or the bot) following the fit, at once."""
    print(line, flush=True)


def fit(options: FitOptions, out: Callable[[str], None] = say) -> ModelCard:
    """Check the data, fine-tune, report, register; the new version's card."""
    from training.data import collect

    started = time.monotonic()
    threads = options.threads or default_threads()
    registry = Registry(options.models_dir)
    with tempfile.TemporaryDirectory(prefix="verdict-fit-") as tmp:
        work = Path(tmp)
        dataset = collect(
            options.images_dir,
            work,
            presize=options.presize,
            data_dir=options.data_dir,
            with_feedback=options.with_feedback,
            reviewed_only=options.reviewed_only,
            min_images=options.min_images,
            threads=threads,
            progress=out,
        )
        prepare_s = time.monotonic() - started
        for line in dataset.describe():
            out(line)
        _quiet_library_warnings()
        import torch

        torch.set_num_threads(threads)
        arch = resolve_arch(options.arch, out)
        default = ensure_default_registered(registry, export=True, out=out)
        parent = registry.active() or default
        card = _train_and_register(
            options, dataset, arch, registry, parent, work, threads, prepare_s, out
        )
    out(f"Fit took {time.monotonic() - started:.0f} s.")
    return card


def _quiet_library_warnings() -> None:
    # Deprecation notices from torch/timm/fastai internals say nothing about this fit.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)


def _train_and_register(
    options: FitOptions,
    dataset: Dataset,
    arch: Arch,
    registry: Registry,
    parent: ModelCard | None,
    work: Path,
    threads: int,
    prepare_s: float,
    out: Callable[[str], None],
) -> ModelCard:
    import fastai
    import timm
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.torch_core import set_seed
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        IndexSplitter,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        error_rate,
        parent_label,
        vision_learner,
    )

    from training.report import format_metrics, interpret

    started = time.monotonic()
    set_seed(options.seed, reproducible=True)
    valid = dataset.split(options.valid_pct, options.seed)
    train_count = len(dataset.examples) - len(valid)
    bs = max(2, min(options.bs, train_count))
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=dataset.labels)),
        get_y=parent_label,
        splitter=IndexSplitter(valid),
        item_tfms=Resize(options.presize),
        batch_tfms=[
            *aug_transforms(size=options.size, min_scale=0.75),
            Normalize.from_stats(list(arch.mean), list(arch.std)),
        ],
    )
    items = [example.image for example in dataset.examples]
    dls = block.dataloaders(items, bs=bs, num_workers=0)
    if list(dls.vocab) != dataset.labels:
        raise FitError("fastai ordered the labels differently from the dataset")
    learn = vision_learner(
        dls, arch.arch, normalize=False, pretrained=True, metrics=[accuracy, error_rate]
    )
    lr = options.lr
    if lr is None:
        out("Looking for a learning rate (lr_find)…")
        lr = float(learn.lr_find(show_plot=False).valley)
        out(f"lr_find suggests {lr:.2e}")
    total = options.freeze_epochs + options.epochs
    out(
        f"training: {total} epoch{'s' if total != 1 else ''} in all ({options.freeze_epochs} "
        "with the pretrained body "
        f"frozen, then {options.epochs} fine-tuning all layers) on {train_count} images, "
        f"validating on {len(valid)}; {arch.name} at {options.size} px, lr {lr:g}, batch {bs}, "
        f"seed {options.seed}, {threads} thread(s)"
    )
    if options.freeze_epochs:
        learn.fine_tune(options.epochs, base_lr=lr, freeze_epochs=options.freeze_epochs)
    else:
        # What fine_tune does after its frozen epochs (a zero-epoch fit would print a table).
        learn.unfreeze()
        learn.fit_one_cycle(options.epochs, slice(lr / 200, lr / 2), pct_start=0.3, div=5.0)
    train_s = time.monotonic() - started

    learn.remove_cb(ProgressCallback)  # no progress bar for the one pass over validation
    metrics, plots, worst = interpret(learn, work / "report")
    learn.add_cb(ProgressCallback())
    metrics["train_images"] = train_count
    names = {example.image: example.name for example in dataset.examples}
    for line in format_metrics(metrics):
        out(line)
    misses = [miss for miss in worst if miss.actual != miss.predicted]
    if misses:
        out("Misclassified validation images (highest loss first):")
        for miss in misses:
            out(
                f"  {names.get(Path(miss.item), miss.item)}: {miss.actual}, predicted "
                f"{miss.predicted} ({miss.probability:.0%})"
            )
    if dataset.feedback is not None:
        # The evidence: the old and the new model on disputed photos neither trained on.
        from training.holdout import compare_on_held_out, format_comparison

        metrics["disputed_holdout"] = compare_on_held_out(learn, dataset, registry, parent, out)
        for line in format_comparison(metrics["disputed_holdout"]):
            out(line)

    learn.path = work
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.export("model.pkl")
    feedback = dataset.feedback
    card = registry.register(
        work / "model.pkl",
        architecture=arch.name,
        labels=dataset.labels,
        image_size=options.size,
        metrics=metrics,
        dataset_fingerprint=dataset.fingerprint(),
        training_images=len(dataset.examples),
        feedback_images=dataset.feedback_images,
        parent=parent.version if parent else None,
        params={
            "epochs": options.epochs,
            "freeze_epochs": options.freeze_epochs,
            "lr": lr,
            "lr_from": "lr_find" if options.lr is None else "option",
            "bs": bs,
            "size": options.size,
            "presize": options.presize,
            "augmentation": "aug_transforms(min_scale=0.75)",
            "normalize": {"mean": list(arch.mean), "std": list(arch.std)},
            "valid_pct": options.valid_pct,
            "split": "stratified by label",
            "seed": options.seed,
            "threads": threads,
            "images_dir": str(Path(options.images_dir).resolve()),
            "with_feedback": options.with_feedback,
            "reviewed_only": options.reviewed_only,
            "feedback_per_label": dict(sorted(feedback.added.items())) if feedback else {},
            "feedback_labels": feedback.labels_json() if feedback else {},
            "held_out_images": len(dataset.held_out),
            "skipped_images": len(dataset.skipped),
            "prepare_seconds": round(prepare_s, 1),  # checking and shrinking the images
            "train_seconds": round(train_s, 1),  # building the learner, lr_find, fine_tune
            "fastai": fastai.__version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": sys.version.split()[0],
        },
        artifacts=plots,
        move=True,
        activate=False,
    )
    if options.compile:
        # Before activation: a bot that switches to it finds its compiled forms on the card.
        # Validated on the fit's own validation split, calibrated on its training split.
        from training.compile import compile_registered

        out("Compiling to ONNX and checking it against the learner…")
        valid_set = set(valid)
        examples = list(enumerate(dataset.examples))
        card = compile_registered(
            registry,
            card,
            validation=[
                (e.image, Path(e.image).parent.name) for i, e in examples if i in valid_set
            ],
            calibration=[e.image for i, e in examples if i not in valid_set],
            out=out,
        )
    if options.activate:
        card = registry.activate(card)
    folder = registry.version_dir(card)
    for kind, title in (("confusion_matrix", "Confusion matrix"), ("top_losses", "Top losses")):
        path = registry.artifact(card, kind)
        if path is not None:
            out(f"{title}: {path}")
    out(f"Card: {folder / 'card.json'}")
    if options.activate:
        out(
            f"Registered {card.version} and made it active: a running bot switches on "
            f"/use {card.version} or when it restarts."
        )
    else:
        out(
            f"Registered {card.version} (not active; switch with "
            f"`python -m training use {card.version}`)."
        )
    return card


def ensure_default_registered(
    registry: Registry, export: bool, out: Callable[[str], None] | None = None
) -> ModelCard | None:
    """Register the bundled ImageNet learner as a version if it is not yet.

    With `export`, the learner file is exported first when missing (imports torch and fastai,
    a few seconds); without, only an existing export is registered (no torch).
    """
    from model.default import DEFAULT_MODEL_FILE

    existing = registry.default()
    if existing is not None:
        return existing
    path = registry.models_dir / DEFAULT_MODEL_FILE
    if not path.is_file():
        if not export:
            return None
        from model.default import ensure_default_learner

        if out is not None:
            out("Exporting the bundled ImageNet learner (once per data folder)…")
        path = ensure_default_learner(registry.models_dir)
    labels = None
    if export:
        from model.default import imagenet_labels

        labels = imagenet_labels()
    card = registry.register_default(path, labels)
    if out is not None:
        out(f"Registered the bundled ImageNet learner as {card.version}, to switch back to.")
    if export and card.compile_record is None:
        from training.compile import compile_registered

        card = compile_registered(registry, card, out=out or (lambda line: None))
    return card


# --------------------------------------------------------------------------- architectures


def resolve_arch(name: str, out: Callable[[str], None] = say) -> Arch:
    """The architecture `name` names, with its pretrained weights at hand.

    The default (EfficientNet-Lite0) ships its weights. A torchvision name (as in the fastai
    book: resnet34) or a timm name (`timm:NAME` to insist on timm) needs its weights in the
    local cache or a download; without either, `ArchitectureError` says so and suggests the
    default instead of waiting on a network that is not there.
    """
    key = name.strip()
    if key.lower() in DEFAULT_ARCH_NAMES:
        from model.arch import DEFAULT_STATS, efficientnet_lite0
        from model.default import ARCHITECTURE

        mean, std = DEFAULT_STATS
        return Arch(ARCHITECTURE, efficientnet_lite0, tuple(mean), tuple(std))
    source = None
    if ":" in key:
        source, key = key.split(":", 1)
        if source not in ("timm", "torchvision"):
            raise ArchitectureError(
                f"unknown architecture source {source!r} in --arch {name}: use timm:NAME or "
                "torchvision:NAME"
            )
    import torchvision

    if source in (None, "torchvision") and key in torchvision.models.list_models(
        module=torchvision.models
    ):
        return _torchvision_arch(key, out)
    import timm

    if source in (None, "timm") and timm.is_model(key):
        return _timm_arch(key, out)
    raise ArchitectureError(
        f"unknown architecture {name!r}: not a torchvision or timm model name. The default, "
        "efficientnet_lite0, works offline; e.g. resnet34 (torchvision) or timm:convnext_tiny "
        "need their weights downloaded once"
    )


def _offline() -> bool:
    return any(
        os.environ.get(flag, "").strip().lower() in ("1", "true", "yes", "on")
        for flag in ("HF_HUB_OFFLINE", "VERDICT_OFFLINE")
    )


def _unavailable(name: str, reason: str) -> ArchitectureError:
    return ArchitectureError(
        f"the pretrained weights of {name} are not on this machine and cannot be downloaded "
        f"({reason}). Leave out --arch to use the default, efficientnet_lite0, whose ImageNet "
        "weights ship with Verdict and work offline; or download the weights once on a "
        "machine that is online and copy the cache here"
    )


def _reachable(host: str, port: int = 443) -> str | None:
    """None when `host` accepts a connection within a few seconds, else why not.

    Run in a thread so that a resolver that hangs cannot hold the fit longer than that.
    """
    result: list[str | None] = ["timed out"]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
            result[0] = None
        except OSError as exc:
            result[0] = str(exc) or type(exc).__name__

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 1)
    return result[0] if not thread.is_alive() else f"no answer from {host} in time"


def _download(name: str, host: str, action: Callable[[], Any]) -> None:
    """Run a weights download with bounded socket waits; failures become clear errors."""
    if _offline():
        raise _unavailable(name, "offline mode is set")
    problem = _reachable(host)
    if problem is not None:
        raise _unavailable(name, f"{host} cannot be reached: {problem}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        action()
    except Exception as exc:
        raise _unavailable(name, f"{type(exc).__name__}: {exc}") from None
    finally:
        socket.setdefaulttimeout(previous)


def _torchvision_arch(key: str, out: Callable[[str], None]) -> Arch:
    import torch
    import torchvision

    weights = torchvision.models.get_model_weights(key).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(weights.url).path).name
    if not cached.is_file():
        out(f"Downloading the pretrained weights of {key} (torchvision)…")
        _download(
            key, urlsplit(weights.url).hostname or "download.pytorch.org", weights.get_state_dict
        )
    transform = weights.transforms()
    return Arch(key, getattr(torchvision.models, key), tuple(transform.mean), tuple(transform.std))


def _timm_arch(key: str, out: Callable[[str], None]) -> Arch:
    import timm
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(key)
    if config is None or not (config.hf_hub_id or config.url):
        raise ArchitectureError(
            f"timm has no pretrained weights for {key}; leave out --arch to use the default"
        )
    if not _timm_cached(config):
        out(f"Downloading the pretrained weights of {key} (timm)…")
        host = "huggingface.co" if config.hf_hub_id else urlsplit(str(config.url)).hostname or ""
        _download(key, host, lambda: timm.create_model(key, pretrained=True))
    else:
        # Cached: tell huggingface_hub not to ask the network first (it retries for a minute).
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    return Arch(f"timm:{key}", key, tuple(config.mean), tuple(config.std))


def _timm_cached(config: Any) -> bool:
    if config.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = config.hf_hub_id.split("@")[0]
        names = [config.hf_hub_filename] if config.hf_hub_filename else []
        names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    import torch

    return (
        Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(config.url).path).name
    ).is_file()
