"""End to end: tools/train_seg.py (binary folder, multi-class manifest, NIfTI) and tools/predict_seg.py."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.backbone.arch=resnet18",
    "model.decoder_channels=[32,16,16,16,16]",
    "data.augment.crop_size=[32,32]",
    "train.epochs=1",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.max_steps_per_epoch=1",
    "train.tensorboard=false",
    "train.amp=off",  # exact comparisons are fp32 (amp=auto is bf16 on CPUs with native bf16)
    "train.warmup_epochs=0",
    "device=cpu",
    "eval.overlays=1",
]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_eval_predict_binary(binary_dataset, tmp_path):
    run = tmp_path / "run"
    config = ROOT / "configs" / "segmentation" / "unet_r34_membrane.yaml"
    args = [
        str(config),
        f"data.root={binary_dataset}",
        "data.images_dir=images",
        "data.masks_dir=masks",
        "data.val_fraction=0.34",
        "model.mode=binary",  # the shipped config is two-class softmax; this test is the sigmoid path
        *TINY,
    ]
    assert _tool("train_seg").main([*args, f"--output-dir={run}"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    seg = summary["segmentation"]
    assert len(seg["per_case"]) == 2 and {r["n_images"] for r in seg["per_case"]} == {1}
    for key in (
        "dice/membrane",
        "dice/cell_interior",
        "iou/cell_interior",
        "precision/membrane",
        "hd95/membrane",
    ):
        assert key in seg["means"]
    assert seg["means"]["dice_mean"] == pytest.approx(
        np.nanmean([seg["means"]["dice/membrane"], seg["means"]["dice/cell_interior"]])
    )
    assert summary["best_value"] == pytest.approx(seg["means"]["dice_mean"])
    assert list((run / "overlays").glob("*.png")) and (run / "checkpoints" / "best.pt").is_file()

    assert _tool("train_seg").main([*args, f"--output-dir={run}", "--eval-only"]) == 0
    assert json.loads((run / "eval.json").read_text())["dice_mean"] == pytest.approx(
        seg["means"]["dice_mean"]
    )

    out = tmp_path / "pred"
    images = binary_dataset / "images"
    Image.fromarray(np.full((37, 53), 90, np.uint8)).save(images / "odd_size.png")  # not a multiple of 32
    assert _tool("predict_seg").main([str(run / "checkpoints" / "best.pt"), str(images), str(out)]) == 0
    mask = np.array(Image.open(out / "odd_size.png"))
    assert mask.shape == (37, 53) and set(np.unique(mask)) <= {0, 255}  # training masks' raw values
    assert len(list(out.glob("*.png"))) == 7 and (out / "overlays" / "img0.png").is_file()
    assert (
        _tool("predict_seg").main([str(run / "checkpoints" / "best.pt"), str(tmp_path / "none"), str(out)])
        == 2
    )


@pytest.mark.slow
def test_train_multiclass_manifest_groups_cases(multiclass_dataset, tmp_path):
    config = ROOT / "configs" / "segmentation" / "unet_r34_multiclass.yaml"
    run = tmp_path / "run"
    args = [
        str(config),
        f"data.root={multiclass_dataset}",
        "model.backbone.weights=''",
        "data.val_fraction=0.34",
        "data.normalization=minmax",
        "model.backbone.in_chans=1",
        "eval.tile_size=[32,32]",
        *TINY,
        f"output_dir={run}",
    ]
    assert _tool("train_seg").main(args) == 0
    seg = json.loads((run / "summary.json").read_text())["segmentation"]
    assert [r["n_images"] for r in seg["per_case"]] == [2] and seg["per_case"][0]["case"].startswith(
        "patient"
    )
    assert seg["spacing_units"] == "mm" and set(seg["channels"]) == {"background", "disc", "square"}
    assert len(seg["per_image"]) == 2


@pytest.mark.slow
def test_train_nifti_reports_per_volume(nifti_dataset, tmp_path):
    config = ROOT / "configs" / "segmentation" / "unet_r18_nifti_ct.yaml"
    run = tmp_path / "run"
    args = [str(config), f"data.root={nifti_dataset}", "data.val_fraction=0.34", *TINY, f"output_dir={run}"]
    assert _tool("train_seg").main(args) == 0
    seg = json.loads((run / "summary.json").read_text())["segmentation"]
    rows = seg["per_case"]
    assert len(rows) == 1 and rows[0]["n_images"] == 1 and rows[0]["case"].startswith("case")  # one volume
    assert seg["per_image"][0]["image"] == rows[0]["case"]  # metrics on the reassembled volume, not slices

    import nibabel as nib

    out = tmp_path / "pred"
    assert (
        _tool("predict_seg").main(
            [str(run / "checkpoints" / "last.pt"), str(nifti_dataset / "imagesTr"), str(out)]
        )
        == 0
    )
    predicted = nib.load(str(out / "case0_0000.nii.gz"))
    source = nib.load(str(nifti_dataset / "imagesTr" / "case0_0000.nii.gz"))
    assert predicted.shape == source.shape and np.allclose(predicted.affine, source.affine)
    assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1}


def test_bad_config_value_is_a_clean_error(binary_dataset, tmp_path, capsys):
    config = ROOT / "configs" / "segmentation" / "unet_r34_membrane.yaml"
    code = _tool("train_seg").main(
        [str(config), f"data.root={binary_dataset}", "model.mode=binray", f"output_dir={tmp_path}"]
    )
    assert code == 2 and "model.mode must be one of" in capsys.readouterr().err
