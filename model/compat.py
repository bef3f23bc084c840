"""Loading learners exported elsewhere: course notebooks on Windows, macOS, Colab, old fastai.

Known failures, handled while unpickling:
- pickles made on Windows hold `pathlib.WindowsPath` objects, which cannot exist on Linux
  (fastai issue #1482): they become ordinary paths;
- learners exported by fastai ≤ 2.7 (plain pickle) refer to functions and transforms defined in
  the notebook (`def is_cat(x): ...`) by reference to `__main__`: label functions are not
  needed for inference and a missing item transform is replaced by identity; the names are
  reported;
- fastai 2.8 moved `fastcore.transform` to the `fasttransform` package: old references are
  redirected when the new home has the same name.
Unpickling runs code from the file: load only files the operator chose (see the README).
"""

from __future__ import annotations

import io
import logging
import pathlib
import pickle
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SUPPORTED_LOSSES = {
    "CrossEntropyLossFlat",
    "CrossEntropyLoss",
    "LabelSmoothingCrossEntropy",
    "LabelSmoothingCrossEntropyFlat",
    "FocalLossFlat",
}

_MOVED_MODULES = {"fastcore.transform": "fasttransform.transform"}


class UnsupportedModel(Exception):
    """A learner Verdict cannot serve (multi-label, regression, ...); the message says why."""


@dataclass
class LoadReport:
    """What had to be patched to load a learner."""

    stubbed: list[str] = field(default_factory=list)
    windows_paths: int = 0
    moved: list[str] = field(default_factory=list)


_identity_base: Any = None


def _identity_transform() -> Any:
    """A fastai Transform that passes items through (made once; fastai is imported lazily)."""
    global _identity_base
    if _identity_base is None:
        from fastai.vision.all import Transform

        class IdentityStub(Transform):  # type: ignore[misc]
            """Stands in for a transform the exporting notebook defined."""

            def encodes(self, x: Any) -> Any:
                return x

        _identity_base = IdentityStub
    return _identity_base


def _stub_for(module: str, name: str, report: LoadReport) -> Any:
    """A stand-in for a notebook-defined function or transform class."""
    qualified = f"{module}.{name}"
    if qualified not in report.stubbed:
        report.stubbed.append(qualified)
    # A Transform subclass serves both cases: as a class it rebuilds pickled instances that
    # then pass items through unchanged; as a "function" (get_y, a label function) it is
    # stored but never called at inference.
    return type(name, (_identity_transform(),), {"__module__": "model.compat"})


def _windows_path(report: LoadReport) -> Any:
    def build(*parts: str) -> Path:
        report.windows_paths += 1
        return Path(pathlib.PureWindowsPath(*parts).as_posix())

    return build


def _pickle_module(report: LoadReport) -> types.ModuleType:
    """A stand-in for the `pickle` module whose Unpickler repairs what it can."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module in ("pathlib", "pathlib._local") and name == "WindowsPath":
                return _windows_path(report)
            if module in _MOVED_MODULES:
                import importlib

                try:
                    moved = importlib.import_module(_MOVED_MODULES[module])
                    found = getattr(moved, name)
                except (ImportError, AttributeError):
                    pass
                else:
                    report.moved.append(f"{module}.{name}")
                    return found
            try:
                return super().find_class(module, name)
            except AttributeError:
                if module in ("__main__", "__mp_main__", "__fake__"):
                    return _stub_for(module, name, report)
                raise

    module = types.ModuleType("verdict_compat_pickle")
    module.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kw: Unpickler(file, **kw).load()  # type: ignore[attr-defined]
    return module


def load_learner_compat(source: Path | bytes, name: str = "") -> tuple[Any, LoadReport]:
    """Load an exported fastai learner for CPU inference, repairing portable problems.

    `source` is the file, or its bytes (what the worker checked: see `model.worker`); `name`
    names it in the log (the file's name by default).
    """
    from fastai.learner import load_learner

    report = LoadReport()
    if isinstance(source, bytes):
        name = name or "the model"
        file: Path | io.BytesIO = io.BytesIO(source)
    else:
        name = name or source.name
        file = source
    with warnings.catch_warnings():
        # load_learner warns that unpickling can run code; callers load only chosen files.
        warnings.simplefilter("ignore")
        try:
            learn = load_learner(file, cpu=True, pickle_module=_pickle_module(report))
        except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as exc:
            raise UnsupportedModel(f"not a fastai learner export ({exc})") from exc
    if report.stubbed:
        logger.warning(
            "%s: stubbed names the notebook defined (not needed for inference): %s",
            name,
            ", ".join(report.stubbed),
        )
    if report.windows_paths:
        logger.info("%s: converted %d Windows path(s)", name, report.windows_paths)
    check_supported(learn)
    return learn, report


def check_supported(learn: Any) -> None:
    """Refuse learners that are not single-label classifiers, with a clear reason."""
    loss = type(getattr(learn, "loss_func", None)).__name__
    vocab = getattr(getattr(learn, "dls", None), "vocab", None)
    if loss in ("BCEWithLogitsLossFlat", "BCEWithLogitsLoss", "BCELossFlat"):
        raise UnsupportedModel(
            "this is a multi-label model (several labels per image); this kind of model is not "
            "supported yet"
        )
    if loss in ("MSELossFlat", "L1LossFlat", "MSELoss", "L1Loss"):
        raise UnsupportedModel(
            "this is a regression model; this kind of model is not supported yet"
        )
    if vocab is None or not len(vocab) or not all(isinstance(v, str | int) for v in vocab):
        raise UnsupportedModel(
            "this model has no list of category labels; this kind of model is not supported yet"
        )
    if isinstance(vocab[0], list | tuple):
        raise UnsupportedModel("this model has several label lists; not supported yet")
    if loss not in SUPPORTED_LOSSES:
        logger.warning("unfamiliar loss function %s: assuming a single-label classifier", loss)


def summarize(learn: Any, report: LoadReport) -> dict[str, Any]:
    """What a learner contains, for the import summary and the registry card."""
    import fastai
    import torch

    model = learn.model
    size = None
    pipeline = getattr(learn.dls, "after_item", None)
    for tfm in getattr(pipeline, "fs", None) or []:
        if type(tfm).__name__ in ("Resize", "RandomResizedCrop"):
            size = list(getattr(tfm, "size", []) or [])
    return {
        "architecture": _architecture(model),
        "labels": [str(v) for v in learn.dls.vocab],
        "input_size": size,
        "loss": type(learn.loss_func).__name__,
        "fastai_version_loaded_with": fastai.__version__,
        "torch_version_loaded_with": torch.__version__,
        "stubbed": list(report.stubbed),
        "windows_paths": report.windows_paths,
    }


def _architecture(model: Any) -> str:
    name = (
        getattr(model, "default_cfg", {}).get("architecture")
        if hasattr(model, "default_cfg")
        else None
    )
    if name:
        return str(name)
    first = next(iter(model.children()), None) if hasattr(model, "children") else None
    inner = (
        next(iter(first.children()), None)
        if first is not None and hasattr(first, "children")
        else None
    )
    return type(inner if inner is not None else model).__name__
