"""Config values of the right type but out of range fail when the task is built, naming the key."""

from __future__ import annotations

import re

import pytest

BAD_VALUES = [
    (["model.backbone.in_chans=0"], "model.backbone.in_chans=0: must be >= 1"),
    (["model.decoder_channels=[32,0,16,16,16]"], "model.decoder_channels=[32, 0, 16, 16, 16]: every width"),
    (["model.decoder_norm_groups=0"], "model.decoder_norm_groups=0: must be >= 1"),
    (["model.deep_supervision=-1"], "model.deep_supervision=-1: must be >= 0"),
    (
        ["model.region_names=[tumour]"],
        "model.region_names=['tumour']: needs one name per model.regions entry",
    ),
    (["data.format=dicom"], "data.format='dicom': expected one of ['folder', 'nifti']"),
    (["data.normalization=unit"], "data.normalization='unit': expected one of ['imagenet', 'zscore'"),
    (["data.ct_window=[40,0]"], "data.ct_window=[40, 0]: must be [center, width] in HU with width > 0"),
    (["data.ct_window=[40]"], "data.ct_window=[40]: must be [center, width]"),
    (["data.spacing=[0.5]"], "data.spacing=[0.5]: must be [] or [row_mm, col_mm] with both values > 0"),
    (["data.spacing=[0.5,0]"], "data.spacing=[0.5, 0]: must be [] or [row_mm, col_mm]"),
    (["data.val_fraction=1.0"], "data.val_fraction=1: must be in [0, 1)"),
    (["data.nifti_axis=3"], "data.nifti_axis=3: expected one of [0, 1, 2]"),
    (["data.cache_volumes=0"], "data.cache_volumes=0: must be >= 1"),
    (["data.class_names=[a,a]"], "data.class_names=['a', 'a']: names must be unique"),
    (["data.case_pattern=img"], "data.case_pattern='img': needs a group"),
    (["data.case_pattern=(img"], "data.case_pattern='(img': is not a regular expression"),
    (
        ["data.augment.crop_size=[0,32]"],
        "data.augment.crop_size=[0, 32]: must be [] or [height, width] with both values > 0",
    ),
    (["data.augment.crop_size=[32]"], "data.augment.crop_size=[32]: must be [] or [height, width]"),
    (["data.augment.hflip=1.5"], "data.augment.hflip=1.5: must be in [0, 1]"),
    (["data.augment.elastic_p=-0.1"], "data.augment.elastic_p=-0.1: must be in [0, 1]"),
    (["data.augment.rotate_limit=-5"], "data.augment.rotate_limit=-5: must be in [0, 180]"),
    (["data.augment.elastic_sigma=0"], "data.augment.elastic_sigma=0: must be > 0"),
    (["data.augment.elastic_alpha=-1"], "data.augment.elastic_alpha=-1: must be >= 0"),
    (["data.augment.brightness_limit=2"], "data.augment.brightness_limit=2: must be in [0, 1]"),
    (["data.augment.contrast_limit=-0.5"], "data.augment.contrast_limit=-0.5: must be in [0, 1]"),
    (["aug.hflip=0.5"], "'aug' has moved: write it as 'data.augment'"),
    (["loss.dice_weight=-1"], "loss.dice_weight=-1: must be >= 0"),
    (
        ["loss.dice_weight=0", "loss.ce_weight=0"],
        "loss.dice_weight=0 and loss.ce_weight=0: loss.name='dice_ce' would be 0 for every batch",
    ),
    (["loss.name=dice", "loss.dice_weight=0"], "loss.dice_weight=0: loss.name='dice' would be 0"),
    (["loss.focal_gamma=-2"], "loss.focal_gamma=-2: must be >= 0"),
    (["loss.deep_supervision_decay=0"], "loss.deep_supervision_decay=0: must be in (0, 1]"),
    (["eval.threshold=1.5"], "eval.threshold=1.5: must be in [0, 1]"),
    (["eval.empty_rule=zero"], "eval.empty_rule='zero': expected one of ['nan', 'one']"),
    (["eval.background_class=2"], "eval.background_class=2: must be null or a class index in 0..1"),
    (["eval.tile_size=[32]"], "eval.tile_size=[32]: must be [] or [height, width] with both values > 0"),
    (["eval.tile_overlap=1.0"], "eval.tile_overlap=1: must be in [0, 1)"),
    (["eval.overlays=-1"], "eval.overlays=-1: must be >= 0"),
]


@pytest.mark.parametrize("overrides, message", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_value_fails_before_the_run_folder_exists(
    binary_dataset, tmp_path, train_seg_main, capsys, overrides, message
):
    run = tmp_path / "run"
    data = [f"data.root={binary_dataset}", "data.images_dir=images", "data.masks_dir=masks"]
    assert train_seg_main("unet_r34_membrane.yaml", run, *data, *overrides) == 2
    assert re.search(re.escape(message), capsys.readouterr().err)
    assert not run.exists()
