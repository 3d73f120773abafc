"""Classifier = backbone + global pooling + dropout + linear or cosine head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn

from tasks.common.backbone import build_backbone
from tasks.engine.config import ConfigError

from .config import ClassificationModelConfig

HEADS = ("linear", "cosine")
POOLS = ("avg", "max", "avgmax", "catavgmax")


class CosineLinear(nn.Module):
    """Scaled cosine similarity between features and class weights (Baseline++, Chen et al. 2019).

    Written here because timm/torchvision have no plain cosine classifier; logits lie in [-scale, scale].
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class ClassificationHead(nn.Module):
    """Global pooling + dropout + classifier on the last feature map."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool: str = "avg",
        dropout: float = 0.0,
        head: str = "linear",
        cosine_scale: float = 16.0,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"model.pool={pool!r}: expected one of {list(POOLS)}")
        if head not in HEADS:
            raise ConfigError(f"model.head={head!r}: expected one of {list(HEADS)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout}: must be in [0, 1)")
        self.pool = SelectAdaptivePool2d(pool_type=pool, flatten=True)
        self.dropout = nn.Dropout(dropout)
        features = in_features * self.pool.feat_mult()
        self.fc = (
            nn.Linear(features, num_classes)
            if head == "linear"
            else CosineLinear(features, num_classes, cosine_scale)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pool(x)))


class ImageClassifier(nn.Module):
    """A backbone returning its last level and a ClassificationHead."""

    def __init__(self, backbone: nn.Module, head: ClassificationHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        return self.head(next(reversed(features.values())))


def build_classifier(
    cfg: ClassificationModelConfig, num_classes: int, load_weights: bool = True
) -> ImageClassifier:
    """Translate the model config into keyword arguments (the model never sees the config).

    `load_weights=False` skips `model.backbone.weights` (a whole checkpoint is loaded right after).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: need at least one class")
    # -1 = the last stage: layer4, or layer3 of the 3-stage CIFAR nets
    backbone = build_backbone(cfg.backbone, out_indices=(-1,), load_weights=load_weights)
    head = ClassificationHead(
        backbone.feature_info.channels[-1], num_classes, cfg.pool, cfg.dropout, cfg.head, cfg.cosine_scale
    )
    return ImageClassifier(backbone, head)
