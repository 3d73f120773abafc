"""Bad config values and data layouts stop tools/train_cls.py (exit 2) before the run folder exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import train_cls

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "classification" / "resnet18_imagefolder.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.mean=[0.5,0.5]", "data.mean=[0.5, 0.5]: needs 3 values, one per input channel"),
        ("data.std=[0,0,0]", "data.std=[0, 0, 0]: every value must be > 0"),
        ("data.std=[.nan,1,1]", "data.std=[nan, 1, 1]: every value must be a finite number"),
        ("data.augment.min_scale=2", "data.augment.min_scale=2: must be in (0, 1]"),
        ("data.augment.min_scale=0", "data.augment.min_scale=0: must be in (0, 1]"),
        ("data.image_size=-32", "data.image_size=-32: must be a positive number of pixels"),
        ("data.resize_size=16", "data.resize_size=16: must be 0 or >= the eval crop, 32"),
        ("data.eval_crop_size=-1", "data.eval_crop_size=-1: must be >= 0"),
        ("data.val_fraction=1", "data.val_fraction=1: must be in [0, 1)"),
        ("data.augment.color_jitter=-0.4", "data.augment.color_jitter=-0.4: must be >= 0"),
        ("data.augment.mixup_prob=1.5", "data.augment.mixup_prob=1.5: must be in [0, 1]"),
        ("data.augment.cutmix_alpha=-1", "data.augment.cutmix_alpha=-1: must be >= 0"),
        (
            "data.augment.policy=heavy",
            "data.augment.policy='heavy': expected one of ['photo', 'cifar', 'none']",
        ),
        (
            "data.augment.auto_augment=auto",
            "data.augment.auto_augment='auto': expected one of ['', 'trivial', 'rand']",
        ),
        ("data.classes=[ants]", "data.classes=['ants']: a classifier needs at least 2 classes"),
        ("data.classes=[ants,ants]", "data.classes=['ants', 'ants']: duplicate names ['ants']"),
        ("model.num_classes=1", "model.num_classes=1: must be 0 (the data's classes) or at least 2"),
        ("model.dropout=1", "model.dropout=1: must be in [0, 1)"),
        ("model.label_smoothing=-0.1", "model.label_smoothing=-0.1: must be in [0, 1)"),
        ("model.backbone.drop_path_rate=1.5", "model.backbone.drop_path_rate=1.5: must be in [0, 1)"),
        (
            "model.backbone.frozen_stages=7",
            "model.backbone.frozen_stages=7: expected one of [-1, 0, 1, 2, 3, 4]",
        ),
        ("model.arch=resnet18", "'model.arch' has moved: write it as 'model.backbone.arch'"),
        ("data.min_scale=0.5", "'data.min_scale' has moved: write it as 'data.augment.min_scale'"),
        ("data.augment=cifar", "data.augment is a section: write data.augment.policy=cifar"),
        ("model.cosine_scale=0", "model.cosine_scale=0: must be > 0"),
        ("model.backbone.arch=resnet19", "model.backbone.arch='resnet19': expected one of"),
        ("model.pool=median", "model.pool='median': expected one of"),
    ],
)
def test_bad_values_name_the_key_before_the_run_folder_exists(
    override, message, image_folder, tmp_path, tiny, capsys
):
    out = tmp_path / "run"
    assert train_cls.main([CONFIG, *tiny(image_folder, out, override)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_root_one_level_too_high_stops_before_the_run_folder(tmp_path, make_folder, tiny, capsys):
    make_folder(tmp_path / "top" / "hymenoptera", per_class=3)
    out = tmp_path / "run"
    assert train_cls.main([CONFIG, *tiny(tmp_path / "top", out)]) == 2
    err = capsys.readouterr().err
    assert "found 1 class folder 'hymenoptera'" in err and "one level too high" in err
    assert not out.exists()


def test_valid_edge_values_are_accepted(image_folder, tmp_path, tiny):
    extra = (
        "data.augment.min_scale=1",
        "data.val_fraction=0.5",
        "data.augment.mixup_prob=0",
        "model.num_classes=2",
    )
    assert train_cls.main([CONFIG, *tiny(image_folder, tmp_path / "run", *extra)]) == 0
