"""eval.tta in segmentation: per-tile views composed with the sliding window, --eval-only, predict_seg."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tasks.engine.config import ConfigError, config_from_dict
from tasks.engine.loading import load_trained_model
from tasks.segmentation.config import SegmentationConfig
from tasks.segmentation.inference import predict_logits
from tasks.segmentation.predict import read_input
from tasks.segmentation.task import SegmentationTask

ROOT = Path(__file__).resolve().parents[2]
MIRRORS = ([], [-1], [-2], [-2, -1])


def _task(
    mode: str = "multiclass", num_classes: int = 3, tta=("hflip", "vflip", "rotate90")
) -> SegmentationTask:
    cfg = {"model": {"mode": mode, "num_classes": num_classes}, "eval": {"tta": list(tta)}}
    return SegmentationTask(config_from_dict(SegmentationConfig, cfg))


@pytest.mark.parametrize("mode,channels", [("multiclass", 3), ("binary", 1)])
def test_tta_per_tile_changes_nothing_for_an_equivariant_model(mode, channels):
    """A 1x1 conv commutes with every view: 8 views on 32 x 48 tiles (turned: 48 x 32) = no TTA."""
    torch.manual_seed(0)
    model = nn.Conv2d(2, channels, 1)
    image = torch.randn(2, 2, 70, 90)
    prob = (lambda z: z.softmax(1)) if mode == "multiclass" else torch.sigmoid
    with torch.no_grad():
        plain = predict_logits(model, image, tile_size=(32, 48), overlap=0.5)
        tta = predict_logits(_task(mode, 3 if channels == 3 else 2).tta_model(model), image, (32, 48), 0.5)
    torch.testing.assert_close(prob(tta), prob(plain), rtol=0, atol=1e-6)


def test_binary_averages_sigmoids_of_the_mirrorings():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 3, padding=1)  # its kernel is not symmetric: the mirrorings differ
    x = torch.randn(1, 1, 16, 24)
    with torch.no_grad():
        expected = sum(torch.flip(torch.sigmoid(model(torch.flip(x, axes))), axes) for axes in MIRRORS) / 4
        got = torch.sigmoid(_task("binary", 2, ["hflip", "vflip"]).tta_model(model)(x))
    torch.testing.assert_close(got, expected)


def test_bad_tta_names_the_key():
    with pytest.raises(ConfigError, match=r"eval\.tta=\['mirror'\]: unknown transform 'mirror'"):
        _task(tta=["mirror"])
    assert isinstance(_task(tta=[]).tta_model(nn.Identity()), nn.Identity)


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_eval_only_and_predict_seg_with_tta(binary_dataset, tmp_path, train_seg_main):
    run = tmp_path / "run"
    data = [
        f"data.root={binary_dataset}",
        "data.images_dir=images",
        "data.masks_dir=masks",
        "data.val_fraction=0.34",
        "model.mode=binary",  # the sigmoid path, which the reference below computes by hand
    ]
    assert train_seg_main("unet_r34_membrane.yaml", run, *data) == 0
    assert train_seg_main("unet_r34_membrane.yaml", run, *data, "eval.tta=[hflip,vflip]", "--eval-only") == 0
    assert 0 <= json.loads((run / "eval.json").read_text())["dice_mean"] <= 1

    out = tmp_path / "pred"
    ckpt = run / "checkpoints" / "last.pt"
    images = tmp_path / "photos"  # two images are enough to compare with the reference
    images.mkdir()
    for name in ("img0.png", "img1.png"):
        shutil.copy(binary_dataset / "images" / name, images / name)
    assert _tool("predict_seg").main([str(ckpt), str(images), str(out), "--tta", "hflip", "vflip"]) == 0
    # The reference: nnU-Net's mirroring by hand, sigmoid probabilities averaged, thresholded at 0.5.
    trained = load_trained_model(ckpt)
    for path in sorted(images.glob("*.png")):
        x = torch.from_numpy(read_input(path, trained.cfg).transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            probs = sum(torch.flip(torch.sigmoid(trained.model(torch.flip(x, a))), a) for a in MIRRORS) / 4
        expected = np.where(probs[0, 0].numpy() > 0.5, 255, 0)
        # BN-folded weights round differently: a pixel within float noise of 0.5 may fall either way.
        undecided = np.abs(probs[0, 0].numpy() - 0.5) < 1e-4
        written = np.array(Image.open(out / path.name))
        assert np.array_equal(written[~undecided], expected[~undecided]), path.name
