"""Config values of the right type but out of range fail when the task is built, naming the key."""

from __future__ import annotations

import re

import pytest

BAD_VALUES = [
    ("model.aspect_ratios=[0,1.0]", "model.aspect_ratios=[0, 1]: every value must be > 0"),
    ("model.anchor_sizes=[[32],[0],[128],[256],[512]]", "model.anchor_sizes[1]=[0]: every value must be > 0"),
    ("model.min_size=[0]", "model.min_size=[0]: every value must be > 0"),
    ("model.max_size=0", "model.max_size=0: must be >= 1"),
    ("model.out_indices=[3,2]", "model.out_indices=[3, 2]: must be increasing backbone levels"),
    ("model.backbone.norm_groups=0", "model.backbone.norm_groups=0: must be >= 1"),
    ("model.gn_groups=8", "'model.gn_groups' has moved: write it as 'model.backbone.norm_groups'"),
    ("model.fpn_channels=0", "model.fpn_channels=0: must be >= 1"),
    ("model.rpn_post_nms_top_n_train=0", "model.rpn_post_nms_top_n_train=0: must be >= 1"),
    ("model.rpn_pre_nms_top_n_test=0", "model.rpn_pre_nms_top_n_test=0: must be >= 1"),
    ("model.rpn_nms_thresh=1.5", "model.rpn_nms_thresh=1.5: must be in [0, 1] (an IoU)"),
    ("model.rpn_bg_iou_thresh=0.8", "model.rpn_bg_iou_thresh=0.8: must be <= model.rpn_fg_iou_thresh=0.7"),
    ("model.box_fg_iou_thresh=-0.5", "model.box_fg_iou_thresh=-0.5: must be in [0, 1] (an IoU)"),
    ("model.rpn_batch_size_per_image=0", "model.rpn_batch_size_per_image=0: must be >= 1"),
    ("model.box_positive_fraction=0", "model.box_positive_fraction=0: must be in (0, 1]"),
    ("model.box_score_thresh=1.5", "model.box_score_thresh=1.5: must be in [0, 1] (a score)"),
    ("model.box_detections_per_img=0", "model.box_detections_per_img=0: must be >= 1"),
    ("model.roi_output_size=0", "model.roi_output_size=0: must be >= 1"),
    ("model.backbone.frozen_stages=7", "model.backbone.frozen_stages=7: expected one of [-1, 0,"),
    ("model.class_names=[cat]", "model.class_names=['cat']: needs one name per model.category_ids entry"),
    ("model.category_ids=[3,3]", "model.category_ids=[3, 3]: ids must be unique"),
    ("data.val_fraction=1.0", "data.val_fraction=1: must be in [0, 1)"),
    ("data.check_policy=repair", "data.check_policy='repair': expected one of ['fail', 'clip', 'drop']"),
    ("data.box_tolerance=-1", "data.box_tolerance=-1: must be >= 0"),
    ("data.num_vis_images=-1", "data.num_vis_images=-1: must be >= 0"),
    ("data.vis_score_thresh=2", "data.vis_score_thresh=2: must be in [0, 1] (a score)"),
    ("data.augment.hflip=1.5", "data.augment.hflip=1.5: must be in [0, 1] (a probability)"),
    ("data.augment.scale_jitter=1.0", "data.augment.scale_jitter=1: must be in [0, 1)"),
    ("data.augment.scale_jitter_prob=-0.1", "data.augment.scale_jitter_prob=-0.1: must be in [0, 1]"),
    ("data.augment.color_jitter=-0.2", "data.augment.color_jitter=-0.2: must be >= 0"),
    ("data.augment.min_visibility=1.5", "data.augment.min_visibility=1.5: must be in [0, 1]"),
    ("data.augment.min_box_size=-1", "data.augment.min_box_size=-1: must be >= 0"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o.split("=")[0] for o, _ in BAD_VALUES])
def test_bad_value_fails_before_the_run_folder_exists(
    coco_root, tmp_path, train_det_main, capsys, override, message
):
    run = tmp_path / "run"
    assert train_det_main(run, f"data.root={coco_root}", override) == 2
    assert re.search(re.escape(message), capsys.readouterr().err)
    assert not run.exists()
