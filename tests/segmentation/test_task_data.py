"""The segmentation task's data: evaluation without the training files, junk files in the folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.engine.checkpoint import save_checkpoint
from tasks.engine.config import config_to_dict
from tasks.segmentation.data import discover_records
from tasks.segmentation.image_io import SegmentationDataError
from tasks.segmentation.model import build_unet
from tasks.segmentation.predict import predict_folder
from tasks.segmentation.task import SegmentationTask

BINARY = ["data.images_dir=images", "data.masks_dir=masks", "data.val_fraction=0.34", "model.mode=binary"]


def _task(tiny_seg_config, root, tmp_path, *extra) -> SegmentationTask:
    cfg = tiny_seg_config("unet_r34_membrane.yaml", tmp_path / "run", f"data.root={root}", *BINARY, *extra)
    return SegmentationTask(cfg)


@pytest.mark.parametrize("folder", ["images", "masks"])
def test_eval_dataset_ignores_a_corrupt_training_file(binary_dataset, tmp_path, tiny_seg_config, folder):
    task = _task(tiny_seg_config, binary_dataset, tmp_path)
    train, val = task.build_datasets()
    broken = train.records[0].stem
    (binary_dataset / folder / f"{broken}.png").write_bytes(b"this is not a PNG file")

    with pytest.raises(SegmentationDataError, match=rf"{folder}/{broken}\.png: cannot read image"):
        _task(tiny_seg_config, binary_dataset, tmp_path).build_datasets()
    eval_set = _task(tiny_seg_config, binary_dataset, tmp_path).build_eval_dataset()
    assert [r.image_id for r in eval_set.records] == [r.image_id for r in val.records]
    assert broken not in {r.stem for r in eval_set.records}
    assert eval_set[0]["image"].shape == (1, 48, 48)


def test_eval_dataset_of_nifti_cases_matches_the_training_split(nifti_dataset, tmp_path, tiny_seg_config):
    cfg = tiny_seg_config(
        "unet_r18_nifti_ct.yaml", tmp_path / "run", f"data.root={nifti_dataset}", "data.val_fraction=0.34"
    )
    _, val = SegmentationTask(cfg).build_datasets()
    eval_set = SegmentationTask(cfg).build_eval_dataset()
    assert [r.image_id for r in eval_set.records] == [r.image_id for r in val.records]
    assert len({r.case_id for r in eval_set.records}) == 1 and len(eval_set) == 4  # one volume, 4 slices


def test_no_validation_split_means_no_eval_dataset(binary_dataset, tmp_path, tiny_seg_config):
    assert (
        _task(tiny_seg_config, binary_dataset, tmp_path, "data.val_fraction=0").build_eval_dataset() is None
    )


# ---------------------------------------------------------------------------------------------- junk files

APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # what `._name` files start with


def _add_junk(root, folders):
    """What a macOS archive brings along: AppleDouble forks named like images, .DS_Store, __MACOSX/."""
    for folder in folders:
        (root / folder / "._img0.png").write_bytes(APPLE_DOUBLE)
        (root / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (root / folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (root / folder / "__MACOSX").mkdir()
        (root / folder / "__MACOSX" / "._img1.png").write_bytes(APPLE_DOUBLE)
    (root / "__MACOSX" / "images").mkdir(parents=True)
    (root / "__MACOSX" / "images" / "._img2.png").write_bytes(APPLE_DOUBLE)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")


def test_image_mask_pairing_skips_junk(binary_dataset, tmp_path, tiny_seg_config):
    task = _task(tiny_seg_config, binary_dataset, tmp_path)
    clean = discover_records(binary_dataset, task.dataset_spec(), 1)
    _add_junk(binary_dataset, ["images", "masks"])
    assert discover_records(binary_dataset, task.dataset_spec(), 1) == clean
    train, val = task.build_datasets()  # masks are read for their values: no junk among them
    assert len(train) + len(val) == 6 == len(clean)


def test_nifti_case_folders_skip_junk(nifti_dataset, tmp_path, tiny_seg_config):
    cfg = tiny_seg_config("unet_r18_nifti_ct.yaml", tmp_path / "run", f"data.root={nifti_dataset}")
    spec = SegmentationTask(cfg).dataset_spec()
    clean = discover_records(nifti_dataset, spec, 1)
    for folder in ("imagesTr", "labelsTr"):
        (nifti_dataset / folder / "._case0_0000.nii.gz").write_bytes(APPLE_DOUBLE)
        (nifti_dataset / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (nifti_dataset / "labelsTr" / "._case0.nii.gz").write_bytes(APPLE_DOUBLE)
    assert discover_records(nifti_dataset, spec, 1) == clean and len(clean) == 12


def _checkpoint(tmp_path, task_meta=None):
    """A tiny untrained binary U-Net saved like a training checkpoint (config, weights, task meta).

    Its threshold 0 makes every pixel foreground, so the written values show the class -> value map.
    """
    from tasks.segmentation.config import SegmentationConfig

    cfg = SegmentationConfig()
    cfg.eval.threshold = 0.0
    m = cfg.model
    m.backbone.arch, m.backbone.in_chans = "resnet18", 1
    m.mode, m.encoder_depth, m.decoder_channels = "binary", 3, [16, 8, 8]
    torch.manual_seed(0)
    checkpoint = {"model": build_unet(m).state_dict(), "config": config_to_dict(cfg), "epoch": 1}
    if task_meta is not None:
        checkpoint["task_meta"] = task_meta
    save_checkpoint(checkpoint, tmp_path / "best.pt")
    return tmp_path / "best.pt"


def test_prediction_folder_skips_junk(binary_dataset, tmp_path):
    images = binary_dataset / "images"
    _add_junk(binary_dataset, ["images"])
    written = predict_folder(_checkpoint(tmp_path), images, tmp_path / "out", overlays=False)
    assert sorted(p.name for p in written) == [f"img{i}.png" for i in range(6)]


def test_prediction_writes_the_mask_values_recorded_in_the_checkpoint(binary_dataset, tmp_path):
    """The training data (and its value map) may be gone: the checkpoint's meta says class 1 was 200."""
    meta = {"class_names": ["background", "cell"], "value_map": [[0, 0], [200, 1]]}
    written = predict_folder(_checkpoint(tmp_path, meta), binary_dataset / "images", tmp_path / "out")
    assert set(np.unique(np.array(Image.open(written[0]))).tolist()) == {200}
    written = predict_folder(_checkpoint(tmp_path / "old"), binary_dataset / "images", tmp_path / "old_out")
    assert set(np.unique(np.array(Image.open(written[0]))).tolist()) == {1}  # no meta: class indices
