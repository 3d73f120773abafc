"""Classifier heads of Baseline (linear) and Baseline++ (cosine), as in Chen et al., ICLR 2019."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def default_cosine_scale(num_classes: int) -> float:
    """Chen et al.'s `distLinear` rule: scale 2 for <= 200 classes, else 10 (their code, backbone.py)."""
    return 2.0 if num_classes <= 200 else 10.0


class CosineHead(nn.Module):
    """Baseline++ head: scale * <x / |x|, w_c> with class-wise weight normalisation.

    As in the authors' `distLinear`, the class weights are weight-normalised (`weight_norm`, dim=0), so
    every class has a learnable norm g_c on top of its direction; the features are L2-normalised.

    Args:
        in_features: feature width.
        num_classes: number of classes.
        scale: logit scale; 0 picks `default_cosine_scale(num_classes)`.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 0.0):
        super().__init__()
        self.linear = weight_norm(nn.Linear(in_features, num_classes, bias=False), name="weight", dim=0)
        self.scale = float(scale) if scale > 0 else default_cosine_scale(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # eps 1e-5 added to the norm as in the reference code (keeps all-zero features finite).
        x = x / (x.norm(p=2, dim=1, keepdim=True) + 1e-5)
        return self.scale * self.linear(x)


def build_head(kind: str, in_features: int, num_classes: int, cosine_scale: float = 0.0) -> nn.Module:
    """ "linear" -> `nn.Linear` (Baseline), "cosine" -> `CosineHead` (Baseline++)."""
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "cosine":
        return CosineHead(in_features, num_classes, cosine_scale)
    raise ValueError(f"head must be 'linear' or 'cosine', got {kind!r}")


def prototype_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int):
    """ProtoNet logits: minus the squared Euclidean distance to each class mean (Snell et al., 2017)."""
    prototypes = class_means(support, support_labels, n_way)
    return -torch.cdist(query, prototypes).pow(2)


def class_means(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean feature of each class 0..n_way-1 (index_add: works for unequal shots too)."""
    sums = torch.zeros(n_way, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=n_way).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]


def simpleshot_transform(features: torch.Tensor, base_mean: torch.Tensor | None) -> torch.Tensor:
    """SimpleShot "CL2N" (Wang et al., 2019): subtract the base-class mean feature, then L2-normalise."""
    if base_mean is not None:
        features = features - base_mean
    return F.normalize(features, p=2, dim=1)
