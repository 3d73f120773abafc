"""Test-time augmentation (TTA): the `eval.tta` key of every task, its views and the probability average.

`eval.tta` lists transforms (``[]`` = off): ``hflip``, ``vflip`` and ``rotate90`` (all four quarter turns).
They generate a set of views, each an element of the square's symmetry group: an optional horizontal flip
followed by 0-3 quarter turns of the last two (spatial) axes. That normal form makes every inverse exact
(flips and quarter turns only move pixels) and removes duplicates: ``[hflip, vflip]`` gives nnU-Net's four
mirrorings, ``[hflip, vflip, rotate90]`` the 8 distinct symmetries rather than 2 x 2 x 4 = 16 passes.

The model is run once per view; dense outputs (segmentation maps, detection boxes) are mapped back with the
view's inverse, and the views' probabilities are averaged (softmax, or sigmoid for binary / multi-label
outputs), as nnU-Net's mirroring and ttach's ``mean`` merge do.

Not ttach: the package last released in 2020 (0.0.3), knows neither sliding-window tiles nor detection
boxes, and what it would give here is ``torch.flip``, ``torch.rot90`` and a mean.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.engine.checks import invalid

TTA_TRANSFORMS = ("hflip", "vflip", "rotate90")
ACTIVATIONS = ("softmax", "sigmoid")


def check_tta(key: str, transforms: Sequence[str]) -> None:
    """A list of distinct names of `TTA_TRANSFORMS` (``[]`` = off).

    Raises:
        ConfigError: naming `key`, the value and the allowed names.
    """
    unknown = [name for name in transforms if name not in TTA_TRANSFORMS]
    if unknown:
        raise invalid(
            key,
            list(transforms),
            f"unknown transform {unknown[0]!r}: expected a list of {list(TTA_TRANSFORMS)} ([] = off)",
        )
    if len(set(transforms)) != len(transforms):
        raise invalid(key, list(transforms), "lists a transform twice")


@dataclass(frozen=True)
class View:
    """One TTA view: ``x -> rot90(hflip(x) if hflip else x, quarter_turns)`` on the last two axes.

    ``torch.rot90`` turns from the first spatial axis towards the second (counter-clockwise on screen),
    so a (H, W) image becomes (W, H) after an odd number of turns.
    """

    hflip: bool = False
    quarter_turns: int = 0  # 0..3

    @property
    def is_identity(self) -> bool:
        return not self.hflip and self.quarter_turns == 0

    def apply(self, x: Tensor) -> Tensor:
        """The view of images (..., H, W)."""
        if self.hflip:
            x = x.flip(-1)
        return torch.rot90(x, self.quarter_turns, dims=(-2, -1)) if self.quarter_turns else x

    def invert(self, y: Tensor) -> Tensor:
        """Maps (..., H', W') computed on the view back onto the original image: the exact inverse."""
        if self.quarter_turns:
            y = torch.rot90(y, -self.quarter_turns, dims=(-2, -1))
        return y.flip(-1) if self.hflip else y

    def invert_boxes(self, boxes: Tensor, height: int, width: int) -> Tensor:
        """Boxes (N, 4) in xyxy pixel coordinates of the view, back on the (height, width) original.

        Coordinates are continuous (a pixel spans [x, x + 1)), as torchvision's detectors and box
        transforms use them: a flip maps x to width - x, so a box keeps its size exactly.
        """
        boxes = boxes.clone()
        # Undo k quarter turns by turning 4 - k more: one turn of a frame `frame_w` wide maps the point
        # (x, y) to (y, frame_w - x) (what torch.rot90 does to pixels), so a box becomes
        # [y1, frame_w - x2, y2, frame_w - x1] and the frame becomes frame_w high.
        frame_w = height if self.quarter_turns % 2 else width
        frame_h = width if self.quarter_turns % 2 else height
        for _ in range((4 - self.quarter_turns) % 4):
            x1, y1, x2, y2 = boxes.unbind(-1)
            boxes = torch.stack([y1, frame_w - x2, y2, frame_w - x1], dim=-1)
            frame_w, frame_h = frame_h, frame_w
        if self.hflip:
            x1, y1, x2, y2 = boxes.unbind(-1)
            boxes = torch.stack([width - x2, y1, width - x1, y2], dim=-1)
        return boxes

    def __str__(self) -> str:
        parts = (["hflip"] if self.hflip else []) + (
            [f"rot{90 * self.quarter_turns}"] if self.quarter_turns else []
        )
        return "+".join(parts) or "identity"


def tta_views(transforms: Sequence[str]) -> list[View]:
    """The distinct views that the listed transforms generate, the identity first.

    Every combination of the listed transforms (each on or off; every quarter turn for ``rotate90``) is
    brought to the normal form of `View`: a vertical flip is a horizontal flip followed by a half turn.
    """
    check_tta("eval.tta", transforms)
    views: list[View] = []
    for h in (False, True) if "hflip" in transforms else (False,):
        for v in (False, True) if "vflip" in transforms else (False,):
            for turns in range(4) if "rotate90" in transforms else (0,):
                # x[..., ::-1, :] == rot180(x[..., :, ::-1]): vflip = hflip, then two quarter turns.
                view = View(hflip=h != v, quarter_turns=(turns + 2 * v) % 4)
                if view not in views:
                    views.append(view)
    return views


def mean_probability_logits(logits: Sequence[Tensor], activation: str, dim: int = 1) -> Tensor:
    """Logits whose softmax (or sigmoid) is the mean of the views' softmax (or sigmoid) probabilities.

    Everything after the model (loss, argmax, threshold, confidence columns) takes logits, so the average
    is handed on as logits: log(mean p) for softmax, log(mean p) - log(mean (1 - p)) for sigmoid. Both are
    computed with logsumexp from log-probabilities, so that a view confident enough for a probability to
    round to 0 or 1 in float32 leaves no infinity. One view is returned as it is.

    Args:
        logits: one tensor per view, all of the same shape, classes (or channels) on `dim`.
        activation: ``softmax`` (one class per pixel / image) or ``sigmoid`` (independent channels).
        dim: the class axis (softmax only).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if len(logits) == 1:
        return logits[0]
    stacked = torch.stack([z.float() for z in logits])
    if activation == "softmax":
        dim = dim + 1 if dim >= 0 else dim
        return torch.logsumexp(F.log_softmax(stacked, dim=dim), dim=0) - math.log(len(logits))
    return torch.logsumexp(F.logsigmoid(stacked), dim=0) - torch.logsumexp(F.logsigmoid(-stacked), dim=0)


class TTAModel(nn.Module):
    """A classifier or a dense predictor run on every view; returns `mean_probability_logits`.

    Args:
        model: maps images (N, C, H, W) to logits (N, K) or, with `dense`, to maps (N, K, H, W).
        views: from `tta_views`.
        activation: ``softmax`` or ``sigmoid``: which probabilities are averaged.
        dense: the outputs are maps aligned with the input; each view's map is inverted before averaging.
    """

    def __init__(self, model: nn.Module, views: Sequence[View], activation: str, dense: bool) -> None:
        super().__init__()
        if not views:
            raise ValueError("TTAModel needs at least one view")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.model = model
        self.views = list(views)
        self.activation = activation
        self.dense = dense

    def forward(self, x: Tensor) -> Tensor:
        outputs = []
        for view in self.views:
            y = self.model(view.apply(x))
            outputs.append(view.invert(y) if self.dense else y)
        return mean_probability_logits(outputs, self.activation)


def with_tta(model: nn.Module, transforms: Sequence[str], activation: str, dense: bool) -> nn.Module:
    """`model` wrapped in a `TTAModel` for the listed transforms; `model` itself when the list is empty."""
    views = tta_views(transforms)
    return model if len(views) == 1 else TTAModel(model, views, activation, dense)


# ----------------------------------------------------------------------------------- predict tools


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """The predict tools' ``--tta NAME [NAME ...]`` (or ``--tta none``), overriding the run's eval.tta."""
    parser.add_argument(
        "--tta",
        nargs="+",
        choices=[*TTA_TRANSFORMS, "none"],
        default=None,
        metavar="NAME",
        help=f"test-time augmentation: any of {', '.join(TTA_TRANSFORMS)}, or none "
        "(default: the checkpoint's eval.tta)",
    )


def tta_from_cli(values: Sequence[str] | None, configured: Sequence[str]) -> list[str]:
    """The transforms to use: ``--tta``'s when given (``none``: off), else the checkpoint's eval.tta."""
    if values is None:
        return list(configured)
    if "none" in values:
        if len(values) > 1:
            raise invalid("--tta", list(values), "none turns test-time augmentation off: give it alone")
        return []
    check_tta("--tta", values)
    return list(values)
