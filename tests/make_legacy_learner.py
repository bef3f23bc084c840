"""Builds learners the way course notebooks left them, for tests/test_compat.py.

Run as a script (so that its functions live in `__main__`, as in a notebook):
    python tests/make_legacy_learner.py OUT.pkl [--multilabel]
"""

from __future__ import annotations

import pathlib
import pickle
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from fastai.vision.all import (
    BCEWithLogitsLossFlat,
    CategoryBlock,
    CrossEntropyLossFlat,
    DataBlock,
    ImageBlock,
    Learner,
    MultiCategoryBlock,
    Normalize,
    Resize,
    Transform,
    get_image_files,
)

from model.default import pretrained_backbone
from tests import images


def is_cat(path):  # type: ignore[no-untyped-def]  # fastai reads annotations: keep none
    """A notebook's label function, as in the fastai book's first chapter."""
    return "cat" if path.name.startswith("cat") else "other"


def cat_tags(path):  # type: ignore[no-untyped-def]
    return ["cat"] if path.name.startswith("cat") else ["other", "thing"]


class Brighten(Transform):
    """A notebook-defined item transform."""

    def encodes(self, x: Any) -> Any:
        return x


class WindowsishPath:
    """Pickles as `pathlib.WindowsPath`, as a learner exported on Windows does."""

    def __reduce__(self) -> tuple[Any, tuple[str, ...]]:
        return (pathlib.WindowsPath, ("C:\\", "Users", "me", "bears"))


def main() -> None:
    out = Path(sys.argv[1])
    multilabel = "--multilabel" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in range(4):
            images.chelsea().rotate(n * 5).save(root / f"cat{n}.jpg")
            images.coffee().rotate(n * 5).save(root / f"coffee{n}.jpg")
        block = DataBlock(
            blocks=(ImageBlock, MultiCategoryBlock if multilabel else CategoryBlock),
            get_items=get_image_files,
            get_y=cat_tags if multilabel else is_cat,
            item_tfms=[Brighten(), Resize(224, method="crop")],
            batch_tfms=Normalize.from_stats([0.5] * 3, [0.5] * 3),
        )
        dls = block.dataloaders(root, bs=2, num_workers=0)
        loss = BCEWithLogitsLossFlat() if multilabel else CrossEntropyLossFlat()
        learn = Learner(dls, pretrained_backbone(num_classes=len(dls.vocab)), loss_func=loss)
        # The way fastai ≤ 2.7 exported: standard pickle, so __main__ names stay references.
        learn.dls = learn.dls.new_empty()
        learn.path = WindowsishPath()  # type: ignore[assignment]
        learn.opt = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch

            torch.save(learn, out, pickle_module=pickle, pickle_protocol=2)


if __name__ == "__main__":
    main()
