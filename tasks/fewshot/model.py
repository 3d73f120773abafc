"""Backbone + global pooling (+ an optional base-class head): the network every few-shot method shares."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from backbones import create_backbone
from tasks.common.tta import View, tta_views

from .heads import build_head


class FewShotNet(nn.Module):
    """A ResNet that returns pooled layer4 features (`embed`) and, for base training, head logits.

    Args:
        backbone: a `backbones.ResNet` whose `out_indices` ends at layer4.
        head: "linear" (Baseline), "cosine" (Baseline++) or "none" (ProtoNet: no base-class head).
        num_classes: base classes seen by the head (rotations included); ignored for head="none".
        cosine_scale: CosineHead scale (0: Chen et al.'s rule).
    """

    def __init__(
        self, backbone: nn.Module, head: str = "linear", num_classes: int = 0, cosine_scale: float = 0.0
    ):
        super().__init__()
        if max(backbone.out_indices) != 4:
            raise ValueError(f"few-shot needs layer4 features; backbone out_indices={backbone.out_indices}")
        self.backbone = backbone
        self.num_features = backbone.num_features
        if head == "none":
            self.head = None
        else:
            if num_classes < 1:
                raise ValueError(f"head={head!r} needs num_classes >= 1, got {num_classes}")
            self.head = build_head(head, self.num_features, num_classes, cosine_scale)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_features): global average pool of layer4."""
        return self.backbone(images)["layer4"].mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Head logits, or the pooled features when there is no head (ProtoNet; works through DDP)."""
        features = self.embed(images)
        return features if self.head is None else self.head(features)


class MultiViewNet(nn.Module):
    """A trained `FewShotNet` whose embedding of an image is its embeddings of several views, concatenated.

    The few-shot form of `eval.tta`: the other tasks average the views' probabilities; here images are
    compared view by view, because a nearest-prototype score of concatenated vectors (a dot product or a
    squared distance) is the sum of the views' scores. Averaging the embeddings instead would blend views
    that base training taught apart, as different classes: a character and its quarter turn, with
    `data.rotations`. It has no backbone to fine-tune: frozen-feature methods only.

    Args:
        net: the trained network.
        views: from `tasks.common.tta.tta_views`, the identity first.
    """

    def __init__(self, net: FewShotNet, views: Sequence[View]):
        super().__init__()
        self.net = net
        self.views = list(views)
        self.num_features = net.num_features * len(self.views)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, views x net.num_features)."""
        return torch.cat([self.net.embed(view.apply(images)) for view in self.views], dim=1)


def with_views(net: FewShotNet, transforms: Sequence[str]) -> nn.Module:
    """`net` embedding every view that `transforms` generate (`MultiViewNet`); `net` itself for []."""
    views = tta_views(transforms)
    return net if len(views) == 1 else MultiViewNet(net, views)


def build_fewshot_net(
    arch: str = "resnet18",
    *,
    weights: str | None = None,
    stem_type: str = "default",
    in_chans: int = 1,
    head: str = "linear",
    num_classes: int = 0,
    cosine_scale: float = 0.0,
) -> FewShotNet:
    """The one place that turns config values into a `FewShotNet` (model classes never see a config)."""
    backbone = create_backbone(
        arch, weights=weights or None, out_indices=(4,), in_chans=in_chans, stem_type=stem_type
    )
    return FewShotNet(backbone, head=head, num_classes=num_classes, cosine_scale=cosine_scale)


@torch.no_grad()
def embed_images(net: FewShotNet, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embed a stack of images in eval mode, `batch_size` at a time; the mode of `net` is restored."""
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        chunks = [
            net.embed(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)
        ]
    finally:
        net.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, net.num_features)
