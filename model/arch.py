"""Architectures `training` builds learners from, importable wherever a learner is unpickled.

fastai's `vision_learner` keeps the architecture callable on the learner (`learn.arch`), so an
exported learner refers to it by module and name: it must live in an importable module (never
a `__main__`), and the bot's workers import this one. torch, timm and the packaged weights are
imported only when a function runs.
"""

from __future__ import annotations

from typing import Any

from model.default import ARCHITECTURE, IMAGE_SIZE, MEAN, STD

DEFAULT_ARCH = "efficientnet_lite0"
# What the architecture expects: the packaged weights were trained on inputs scaled to [-1, 1].
DEFAULT_STATS = (list(MEAN), list(STD))
DEFAULT_SIZE = IMAGE_SIZE


def efficientnet_lite0(pretrained: bool = True) -> Any:
    """timm's EfficientNet-Lite0, with the packaged ImageNet weights when `pretrained`.

    fastai calls this as `arch(pretrained=...)`, keeps the layers before the pooling layer as
    the body and puts a new head on it.
    """
    if pretrained:
        from model.default import pretrained_backbone

        return pretrained_backbone()
    import timm

    return timm.create_model(ARCHITECTURE, pretrained=False)
