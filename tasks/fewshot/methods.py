"""Few-shot methods on one trained `FewShotNet`: how a task (support set) turns into query predictions.

Two kinds, and the evaluator treats them differently:

- frozen-feature methods (`uses_frozen_features = True`): ProtoNet, SimpleShot and Baseline/Baseline++
  with the whole backbone frozen. They only see embeddings, so each image is embedded once and reused.
- fine-tuning methods: Baseline/Baseline++ with `frozen_stages < 4` train part of the backbone per task,
  so query embeddings must come from the adapted network of that task. Only the frozen prefix (stem ..
  layer`frozen_stages`) is deterministic and can be computed once (`prefix_level`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .heads import build_head, class_means, prototype_logits, simpleshot_transform
from .model import FewShotNet

METHODS = ("protonet", "simpleshot", "baseline", "baseline++")


class ProtoNet:
    """Nearest prototype under squared Euclidean distance (Snell et al., NeurIPS 2017)."""

    uses_frozen_features = True

    def predict(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int):
        """Return (num_query, n_way) logits."""
        return prototype_logits(support, support_labels, query, n_way)


class SimpleShot:
    """Nearest class mean on centred, L2-normalised features (Wang et al., 2019, "CL2N").

    Args:
        base_mean: mean embedding of the base-class training images; None centres nothing (plain L2N).
    """

    uses_frozen_features = True

    def __init__(self, base_mean: torch.Tensor | None):
        self.base_mean = base_mean

    def predict(self, support, support_labels, query, n_way):
        support = simpleshot_transform(support, self.base_mean)
        query = simpleshot_transform(query, self.base_mean)
        return prototype_logits(support, support_labels, query, n_way)


@dataclass
class FinetuneSettings:
    """Support-set fitting of Baseline / Baseline++ (Chen et al., ICLR 2019; defaults from their code).

    The reference `set_forward_adaptation` trains the new head for 100 passes over the support set in
    batches of 4 with SGD(lr=0.01, momentum=0.9, dampening=0.9, weight_decay=1e-3).

    Attributes:
        frozen_stages: backbone levels kept fixed (OpenMMLab meaning); 4 freezes the whole backbone (the
            paper's setting: only the head is trained, on frozen features), 3 also fine-tunes layer4.
        epochs: passes over the support set.
        batch_size, lr, momentum, dampening, weight_decay: SGD settings for the head and trained stages.
        norm_eval: keep BatchNorm of the fine-tuned stages in eval mode (batch statistics of 4 images
            are noise; the base-training statistics are kept).
        seed: seeds head initialisation and batch order; episode i uses seed + i.
    """

    frozen_stages: int = 3
    epochs: int = 100
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    dampening: float = 0.9
    weight_decay: float = 1e-3
    norm_eval: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frozen_stages not in range(-1, 5):
            raise ValueError(f"frozen_stages must be in -1..4, got {self.frozen_stages}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class HeadTransfer:
    """Baseline (linear head) or Baseline++ (cosine head) fitted on each task's support set.

    Args:
        net: the base-trained network (left untouched: each task works on a copy of its trained part).
        head: "linear" or "cosine".
        settings: see `FinetuneSettings`.
    """

    def __init__(self, net: FewShotNet, head: str, settings: FinetuneSettings | None = None):
        self.net = net
        self.head_kind = head
        self.settings = settings or FinetuneSettings()
        build_head(head, 1, 1)  # validates the kind before any work starts
        self.uses_frozen_features = self.settings.frozen_stages >= 4

    @property
    def prefix_level(self) -> int:
        """Last backbone level whose output is fixed: inputs to `predict` are that level's activations."""
        return min(self.settings.frozen_stages, 4)

    def _trainable_suffix(self) -> nn.Module:
        # A per-task copy: the base-trained network must stay as it is for the next task.
        backbone = copy.deepcopy(self.net.backbone)
        backbone.eval()
        if not self.settings.norm_eval:
            for level in range(self.settings.frozen_stages + 1, 5):
                for module in backbone.stage_modules(level):
                    module.train()
        return backbone

    def _features(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for level in range(self.prefix_level + 1, 5):
            # `forward_level` is the backbone's own per-level forward: the suffix computes exactly what
            # `backbone.forward` would from the cached prefix activations.
            x = backbone.forward_level(level, x)
        return x.mean(dim=(2, 3))

    def predict(self, support, support_labels, query, n_way, episode_index: int = 0):
        """Fit a fresh head (and the unfrozen stages) on the support set; return query logits.

        Args:
            support, query: activations of level `prefix_level` (pooled features when everything is frozen).
            support_labels: episode labels 0..n_way-1 of the support rows.
            n_way: number of classes.
            episode_index: offsets the seed so that every episode gets its own, reproducible, head init.
        """
        if self.uses_frozen_features:
            return self.predict_batch(
                support[None], support_labels[None], query[None], n_way, [episode_index]
            )[0]
        s = self.settings
        generator = torch.Generator().manual_seed(s.seed + episode_index)
        head = self._initial_head(n_way, episode_index).to(support.device)
        backbone = self._trainable_suffix()
        params = list(head.parameters())
        params += [
            p
            for level in range(self.prefix_level + 1, 5)
            for m in backbone.stage_modules(level)
            for p in m.parameters()
        ]
        optimizer = self._optimizer(params)
        num_support = len(support)
        for _ in range(s.epochs):
            order = torch.randperm(num_support, generator=generator).to(support.device)
            for start in range(0, num_support, s.batch_size):
                batch = order[start : start + s.batch_size]
                loss = F.cross_entropy(head(self._features(backbone, support[batch])), support_labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        backbone.eval()
        with torch.no_grad():
            return head(self._features(backbone, query))

    def predict_batch(self, support, support_labels, query, n_way, episode_indices):
        """Head-only transfer (`frozen_stages=4`) for E episodes of the same shape at once.

        Each episode's head is trained exactly as alone: same initialisation and batch order (seeded by
        its episode index), and its gradient depends on its own loss only (the summed loss has no cross
        terms); SGD with momentum and weight decay is element-wise. Stacking E small heads into batched
        matmuls replaces E * steps tiny optimizer steps (Python-overhead bound) by `steps` larger ones.

        Args:
            support: (E, S, D) pooled features; support_labels: (E, S); query: (E, M, D).
            n_way: classes per episode; episode_indices: E seeds offsets.

        Returns:
            (E, M, n_way) logits.
        """
        if not self.uses_frozen_features:
            raise ValueError("predict_batch is for frozen_stages=4 (head-only) transfer")
        s = self.settings
        heads = [self._initial_head(n_way, i) for i in episode_indices]
        if self.head_kind == "linear":
            params = [
                torch.stack([h.weight.detach() for h in heads]),
                torch.stack([h.bias.detach() for h in heads]),
            ]
        else:  # weight_norm parametrisation: g (N, 1) and direction v (N, D) per class
            originals = [h.linear.parametrizations.weight for h in heads]
            params = [
                torch.stack([o.original0.detach() for o in originals]),
                torch.stack([o.original1.detach() for o in originals]),
            ]
        params = [p.to(support.device).clone().requires_grad_(True) for p in params]
        scale = heads[0].scale if self.head_kind == "cosine" else 1.0

        def logits(x: torch.Tensor) -> torch.Tensor:
            if self.head_kind == "linear":
                return torch.baddbmm(params[1][:, None, :], x, params[0].transpose(1, 2))
            x = x / (x.norm(p=2, dim=2, keepdim=True) + 1e-5)
            weight = params[1] * (params[0] / params[1].norm(p=2, dim=2, keepdim=True))
            return scale * torch.bmm(x, weight.transpose(1, 2))

        optimizer = self._optimizer(params)
        generators = [torch.Generator().manual_seed(s.seed + i) for i in episode_indices]
        num_episodes, num_support = support.shape[:2]
        rows = torch.arange(num_episodes, device=support.device)[:, None]
        for _ in range(s.epochs):
            order = torch.stack([torch.randperm(num_support, generator=g) for g in generators]).to(
                support.device
            )
            for start in range(0, num_support, s.batch_size):
                batch = order[:, start : start + s.batch_size]
                scores = logits(support[rows, batch])
                losses = F.cross_entropy(
                    scores.flatten(0, 1), support_labels[rows, batch].flatten(), reduction="none"
                )
                optimizer.zero_grad(set_to_none=True)
                losses.view(num_episodes, -1).mean(dim=1).sum().backward()
                optimizer.step()
        with torch.no_grad():
            return logits(query)

    def _initial_head(self, n_way: int, episode_index: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed + episode_index)
            return build_head(self.head_kind, self.net.num_features, n_way)

    def _optimizer(self, params) -> torch.optim.Optimizer:
        s = self.settings
        return torch.optim.SGD(
            params, lr=s.lr, momentum=s.momentum, dampening=s.dampening, weight_decay=s.weight_decay
        )


def build_method(
    name: str,
    net: FewShotNet,
    *,
    base_mean: torch.Tensor | None = None,
    finetune: FinetuneSettings | None = None,
):
    """Method by name: "protonet", "simpleshot", "baseline" (linear head) or "baseline++" (cosine head)."""
    if name == "protonet":
        return ProtoNet()
    if name == "simpleshot":
        return SimpleShot(base_mean)
    if name in ("baseline", "baseline++"):
        return HeadTransfer(net, "linear" if name == "baseline" else "cosine", finetune)
    raise ValueError(f"method must be one of {list(METHODS)}, got {name!r}")


__all__ = [
    "METHODS",
    "FinetuneSettings",
    "HeadTransfer",
    "ProtoNet",
    "SimpleShot",
    "build_method",
    "class_means",
]
