"""tasks.common.tta: the views, their exact inverses, the probability average and the eval.tta checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from tasks.common.tta import (
    TTAModel,
    View,
    check_tta,
    mean_probability_logits,
    tta_from_cli,
    tta_views,
    with_tta,
)
from tasks.engine.config import ConfigError

ALL = ["hflip", "vflip", "rotate90"]


def _key(t: torch.Tensor) -> tuple:
    """A tensor as something a set can hold: its shape and values."""
    return tuple(t.shape), tuple(t.flatten().tolist())


@pytest.mark.parametrize(
    "transforms,count",
    [([], 1), (["hflip"], 2), (["vflip"], 2), (["hflip", "vflip"], 4), (["rotate90"], 4), (ALL, 8)],
)
def test_views_are_distinct_and_start_with_the_identity(transforms, count):
    views = tta_views(transforms)
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert len(views) == count and views[0].is_identity
    assert len({_key(view.apply(x)) for view in views}) == count


def test_views_are_the_flips_and_turns_they_name():
    x = torch.randn(2, 3, 5, 7)
    hflip, vflip = tta_views(["hflip"])[1], tta_views(["vflip"])[1]
    assert torch.equal(hflip.apply(x), torch.flip(x, [-1]))
    assert torch.equal(vflip.apply(x), torch.flip(x, [-2]))
    mirrors = {_key(torch.flip(x, axes)) for axes in ([], [-1], [-2], [-2, -1])}
    assert {_key(v.apply(x)) for v in tta_views(["hflip", "vflip"])} == mirrors  # nnU-Net's mirroring
    turns = {_key(torch.rot90(x, k, (-2, -1))) for k in range(4)}
    assert {_key(v.apply(x)) for v in tta_views(["rotate90"])} == turns
    symmetries = {_key(torch.rot90(flipped, k, (-2, -1))) for flipped in (x, x.flip(-1)) for k in range(4)}
    assert {_key(v.apply(x)) for v in tta_views(ALL)} == symmetries


@pytest.mark.parametrize("view", tta_views(ALL), ids=str)
def test_every_inverse_is_exact_on_a_rectangle(view):
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(view.invert(view.apply(x)), x)


@pytest.mark.parametrize("view", tta_views(ALL), ids=str)
def test_boxes_map_back_like_torchvision_moves_them(view):
    """torchvision's box transforms (v2 functional) move the boxes onto the view: ours must undo them."""
    height, width = 10, 16
    boxes = torch.tensor([[3.0, 2.0, 7.0, 5.0], [0.0, 0.0, 16.0, 10.0], [12.5, 1.25, 15.0, 9.5]])
    moved = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
    if view.hflip:
        moved = TF.horizontal_flip(moved)
    if view.quarter_turns:
        moved = TF.rotate(moved, 90 * view.quarter_turns, expand=True)
    expected_canvas = (width, height) if view.quarter_turns % 2 else (height, width)
    assert moved.canvas_size == expected_canvas
    torch.testing.assert_close(view.invert_boxes(moved.as_subclass(torch.Tensor), height, width), boxes)


def test_boxes_follow_the_pixels():
    """The box of a bright rectangle, found on the view and mapped back, is the rectangle's box."""
    image = torch.zeros(1, 9, 14)
    image[:, 2:5, 3:11] = 1.0
    for view in tta_views(ALL):
        rows, cols = torch.nonzero(view.apply(image)[0], as_tuple=True)
        found = torch.tensor([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32)
        assert view.invert_boxes(found, 9, 14).tolist() == [[3.0, 2.0, 11.0, 5.0]], str(view)


class PerPixel(nn.Module):
    """A 1x1 convolution: commutes with every flip and turn, so TTA must change nothing."""

    def __init__(self, out_channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, out_channels, 1)

    def forward(self, x):
        return self.conv(x)


class Skewed(nn.Module):
    """A dense model that is not symmetric: a 3x3 kernel plus a bias that depends on the row and column."""

    def __init__(self, out_channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(2, out_channels, 3, padding=1)

    def forward(self, x):
        h, w = x.shape[-2:]
        ramp = torch.arange(h)[:, None] * 0.3 - torch.arange(w)[None, :] * 0.2
        return self.conv(x) + ramp


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_an_equivariant_model_gives_the_same_probabilities(activation):
    x = torch.randn(2, 2, 6, 10)
    model = PerPixel()
    prob = torch.softmax if activation == "softmax" else lambda z, dim: torch.sigmoid(z)
    plain = prob(model(x), dim=1)
    with torch.no_grad():
        for transforms in (["hflip"], ["hflip", "vflip"], ALL):
            tta = with_tta(model, transforms, activation, dense=True)
            torch.testing.assert_close(prob(tta(x), dim=1), plain.detach(), rtol=0, atol=1e-6)


def test_segmentation_average_is_nnunets_mirroring():
    """softmax(TTA logits) = mean over the four mirrorings of flip(softmax(model(flip(x))))."""
    x = torch.randn(2, 2, 6, 10)
    model = Skewed()
    with torch.no_grad():
        expected = sum(
            torch.flip(torch.softmax(model(torch.flip(x, axes)), 1), axes)
            for axes in ([], [-1], [-2], [-2, -1])
        )
        got = torch.softmax(with_tta(model, ["hflip", "vflip"], "softmax", dense=True)(x), 1)
        torch.testing.assert_close(got, expected / 4)
        assert not torch.allclose(got, torch.softmax(model(x), 1), atol=1e-3)  # the views do differ


def test_rotations_are_averaged_on_non_square_images():
    x = torch.randn(1, 2, 6, 10)
    model = Skewed(out_channels=1)
    with torch.no_grad():
        views = [torch.rot90(torch.sigmoid(model(torch.rot90(x, k, (2, 3)))), -k, (2, 3)) for k in range(4)]
        got = torch.sigmoid(with_tta(model, ["rotate90"], "sigmoid", dense=True)(x))
    torch.testing.assert_close(got, sum(views) / 4)


def test_classifier_average_is_the_mean_softmax_of_the_flips():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 6, 5))  # position-dependent: not flip-invariant
    x = torch.randn(3, 2, 4, 6)
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
        logits = TTAModel(model, tta_views(["hflip"]), "softmax", dense=False)(x)
    torch.testing.assert_close(logits.softmax(1), expected)
    # The logits are log(mean p): the cross-entropy is the average prediction's.
    labels = torch.tensor([0, 3, 4])
    torch.testing.assert_close(F.cross_entropy(logits, labels), F.nll_loss(expected.log(), labels))


def test_confident_views_stay_finite():
    confident = torch.tensor([[1000.0, -1000.0], [-1000.0, 1000.0]])
    softmax = mean_probability_logits([confident, confident.flip(0)], "softmax")
    assert torch.isfinite(softmax).all()
    torch.testing.assert_close(softmax.softmax(1), torch.full((2, 2), 0.5))
    sigmoid = mean_probability_logits([confident, -confident], "sigmoid")
    assert torch.isfinite(sigmoid).all()
    torch.testing.assert_close(torch.sigmoid(sigmoid), torch.full((2, 2), 0.5))
    one = torch.randn(2, 3)
    assert mean_probability_logits([one], "softmax") is one  # no TTA: the logits as they are


def test_no_transforms_is_the_model_itself():
    model = PerPixel()
    assert with_tta(model, [], "softmax", dense=True) is model
    assert tta_views([]) == [View()]


def test_bad_names_are_clear_errors():
    with pytest.raises(ConfigError, match=r"eval\.tta=\['hflip', 'flip'\]: unknown transform 'flip'.*hflip"):
        check_tta("eval.tta", ["hflip", "flip"])
    with pytest.raises(ConfigError, match="twice"):
        check_tta("eval.tta", ["hflip", "hflip"])
    with pytest.raises(ConfigError, match=r"--tta.*alone"):
        tta_from_cli(["none", "hflip"], [])
    assert tta_from_cli(None, ["vflip"]) == ["vflip"]  # the checkpoint's own
    assert tta_from_cli(["none"], ["vflip"]) == []
    assert tta_from_cli(["hflip"], []) == ["hflip"]
