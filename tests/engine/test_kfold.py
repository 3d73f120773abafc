"""K-fold cross-validation: fold assignment, splits.json, the fold ensemble and tools/train_cv.py."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tasks.classification.config import ClassificationConfig
from tasks.classification.data import DataError
from tasks.classification.task import ClassificationTask
from tasks.common.kfold import (
    FoldError,
    FoldUnits,
    Splits,
    held_out,
    make_folds,
    read_splits,
    unique_units,
    write_splits,
)
from tasks.engine.checkpoint import CheckpointError
from tasks.engine.config import load_config
from tasks.engine.crossval import (
    CrossValidationError,
    config_changes,
    cross_validate,
    fold_dir,
    prepare_splits,
    table_rows,
)
from tasks.engine.ensemble import ProbabilityEnsemble, fold_checkpoints
from tasks.segmentation.config import SegmentationDataConfig
from tasks.segmentation.data import validation_cases
from tools import predict_cls, predict_seg, train_cv

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = ROOT / "configs" / "segmentation" / "unet_r34_membrane.yaml"
CLS_CONFIG = ROOT / "configs" / "classification" / "resnet18_imagefolder.yaml"
# The smallest backbone (CIFAR ResNet-20, 0.27 M parameters), one optimizer step per fold, fp32.
FAST = [
    "model.backbone.arch=resnet20",
    "model.backbone.in_chans=3",
    "model.backbone.weights=''",
    "train.epochs=1",
    "train.max_steps_per_epoch=1",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.warmup_epochs=0",
    "train.amp=off",
    "train.plots=false",
    "train.tensorboard=false",
    "device=cpu",
]
SEG_FAST = [
    *FAST,
    "model.backbone.in_chans=1",
    "model.encoder_depth=3",
    "model.decoder_channels=[16,16,16]",
    "data.images_dir=images",
    "data.masks_dir=masks",
    "data.augment.crop_size=[32,32]",
    "data.case_pattern=^(p\\d+)_",
    "train.eval_every=1",
    "eval.overlays=0",
    "eval.hd95=false",
]
CLS_FAST = [*FAST, "data.image_size=32", "data.resize_size=32", "train.channels_last=false"]


def units(n: int, classes: int | None = None) -> FoldUnits:
    ids = [f"u{i:02d}" for i in range(n)]
    return FoldUnits("case", tuple(ids), None if classes is None else tuple(i % classes for i in range(n)))


# ------------------------------------------------------------------------------------ fold assignment


@pytest.mark.parametrize(("n", "k"), [(10, 5), (11, 3), (3, 3), (7, 2)])
def test_folds_are_disjoint_covering_and_balanced(n, k):
    splits = make_folds(units(n), k, seed=0)
    val_ids = [unit for fold in splits.folds for unit in fold]
    assert sorted(val_ids) == sorted(units(n).ids)  # every unit in exactly one validation fold
    assert max(map(len, splits.folds)) - min(map(len, splits.folds)) <= 1
    for i in range(k):
        assert splits.train(i) | splits.val(i) == set(units(n).ids)
        assert not splits.train(i) & splits.val(i)


def test_folds_are_seeded_and_independent_of_the_listing_order():
    made = make_folds(units(12), 4, seed=3)
    assert make_folds(units(12), 4, seed=3) == made
    shuffled = FoldUnits("case", tuple(reversed(units(12).ids)))
    assert make_folds(shuffled, 4, seed=3) == made
    assert make_folds(units(12), 4, seed=4) != made


def test_stratified_folds_spread_every_class_evenly():
    labels = [0] * 7 + [1] * 5 + [2] * 3
    stratified = FoldUnits("image", tuple(f"img{i}" for i in range(15)), tuple(labels))
    splits = make_folds(stratified, 3, seed=1)
    label_of = dict(zip(stratified.ids, labels))
    for label, total in Counter(labels).items():
        per_fold = [sum(label_of[u] == label for u in fold) for fold in splits.folds]
        assert sum(per_fold) == total and max(per_fold) - min(per_fold) <= 1
    assert [len(f) for f in splits.folds] == [5, 5, 5]


def test_segmentation_folds_keep_every_case_on_one_side():
    case_of_image = [f"patient{i // 3}" for i in range(12)]  # 4 patients, 3 images each
    held = [validation_cases(case_of_image, SegmentationDataConfig(num_folds=4, fold=i)) for i in range(4)]
    assert sorted(c for fold in held for c in fold) == [f"patient{i}" for i in range(4)]
    for val in held:
        train_cases = {c for c in case_of_image if c not in val}
        assert len(val) == 1 and not train_cases & val
    # num_folds=0 keeps the val_fraction split
    plain = validation_cases(case_of_image, SegmentationDataConfig(val_fraction=0.25, split_seed=2))
    assert len(plain) == 1


def test_unique_units_keeps_one_id_per_case_with_its_first_stratum():
    grouped = unique_units("case", ["b", "a", "b", "c"], [1, 0, 2, 1])
    assert grouped.ids == ("a", "b", "c") and grouped.strata == (0, 1, 1)


# ------------------------------------------------------------------------------------- splits.json


def test_splits_file_round_trips_in_nnunet_layout(tmp_path):
    splits = make_folds(units(7), 3, seed=0)
    write_splits(tmp_path / "splits.json", splits)
    data = json.loads((tmp_path / "splits.json").read_text())
    assert [set(f["val"]) for f in data["folds"]] == [splits.val(i) for i in range(3)]
    assert [set(f["train"]) for f in data["folds"]] == [splits.train(i) for i in range(3)]
    assert read_splits(tmp_path / "splits.json") == splits


def test_an_existing_splits_file_is_reused_not_remade(tmp_path):
    path = tmp_path / "splits.json"
    ids = units(6)
    by_hand = Splits("case", 0, (("u00", "u01", "u02"), ("u03", "u04", "u05")))  # not what make_folds gives
    assert by_hand != make_folds(ids, 2, seed=0)
    write_splits(path, by_hand)
    assert prepare_splits(path, ids, 2, seed=0) == by_hand
    assert held_out(ids, 2, 1, 0, str(path)) == {"u03", "u04", "u05"}
    assert held_out(ids, 2, 1, 0) == make_folds(ids, 2, seed=0).val(1)  # no file: made from the seed
    fresh = tmp_path / "new" / "splits.json"
    made = prepare_splits(fresh, ids, 3, seed=5)
    assert read_splits(fresh) == made == make_folds(ids, 3, seed=5)


def test_a_splits_file_for_other_data_or_settings_is_refused(tmp_path):
    path = tmp_path / "splits.json"
    write_splits(path, make_folds(units(6), 2, seed=0))
    with pytest.raises(FoldError, match=r"other data .*not in the file: u06"):
        held_out(units(7), 2, 0, 0, str(path))
    with pytest.raises(FoldError, match="holds 2 folds made with seed 0, this run asks for 3 folds"):
        prepare_splits(path, units(6), 3, seed=0)
    with pytest.raises(FoldError, match="seed 1"):
        prepare_splits(path, units(6), 2, seed=1)
    with pytest.raises(FoldError, match="file not found"):
        held_out(units(6), 2, 0, 0, str(tmp_path / "nothing.json"))


def test_bad_fold_settings_name_the_key_and_value():
    with pytest.raises(FoldError, match=r"data.num_folds=1: .*at least 2 folds"):
        held_out(units(5), 1, 0, 0)
    with pytest.raises(FoldError, match=r"data.num_folds=6: the data has only 5 case\(s\)"):
        held_out(units(5), 6, 0, 0)
    with pytest.raises(FoldError, match=r"data.fold=3: expected 0..2"):
        held_out(units(5), 3, 3, 0)


def test_config_changes_ignore_machine_settings():
    saved = {"device": "cuda", "train": {"lr": 0.1, "num_workers": 8}}
    assert config_changes(saved, {"device": "cpu", "train": {"lr": 0.1, "num_workers": 0}}) == []
    assert config_changes(saved, {"device": "cpu", "train": {"lr": 0.2, "num_workers": 8}}) == [
        "train.lr 0.1 -> 0.2"
    ]


def test_table_shows_the_main_metric_summaries_and_its_per_class_family():
    names = ["dice/bg", "dice/fg", "iou/fg", "dice_mean", "loss"]
    assert table_rows(names, "dice_mean") == ["dice_mean", "loss", "dice/bg", "dice/fg"]
    assert table_rows(["top1", "top5", "loss"], "top1") == ["top1", "top5", "loss"]


# ---------------------------------------------------------------------------------------- ensemble


def tiny_model(seed: int, dense: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(3, 4, 3, padding=1) if dense else nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_ensemble_of_identical_models_is_the_model(activation):
    model, x = tiny_model(0), torch.randn(6, 3, 8, 8)
    ensemble = ProbabilityEnsemble([model] * 3, activation)
    prob = torch.softmax if activation == "softmax" else lambda z, dim: torch.sigmoid(z)
    torch.testing.assert_close(prob(ensemble(x), dim=1), prob(model(x), dim=1))


@pytest.mark.parametrize("dense", [False, True])
def test_ensemble_averages_the_probabilities(dense):
    a, b, x = tiny_model(1, dense), tiny_model(2, dense), torch.randn(4, 3, 8, 8)
    softmax = ProbabilityEnsemble([a, b], "softmax")(x)
    torch.testing.assert_close(softmax.softmax(1), (a(x).softmax(1) + b(x).softmax(1)) / 2)
    sigmoid = ProbabilityEnsemble([a, b], "sigmoid")(x)
    torch.testing.assert_close(sigmoid.sigmoid(), (a(x).sigmoid() + b(x).sigmoid()) / 2)


def test_fold_checkpoints_of_a_folder_need_splits_and_every_fold(tmp_path):
    assert fold_checkpoints(tmp_path / "best.pt") == [tmp_path / "best.pt"]
    with pytest.raises(CheckpointError, match="without splits.json"):
        fold_checkpoints(tmp_path)
    write_splits(tmp_path / "splits.json", make_folds(units(4), 2, seed=0))
    (fold_dir(tmp_path, 0) / "checkpoints").mkdir(parents=True)
    (fold_dir(tmp_path, 0) / "checkpoints" / "best.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"fold\(s\) \[1\] have no checkpoints/best.pt"):
        fold_checkpoints(tmp_path)


# ------------------------------------------------------------------------------------------- data


def write_seg_data(root: Path, patients: int = 3, per_patient: int = 2) -> Path:
    """images/p<k>_s<i>.png + masks/ (0/255 discs): `patients` cases of `per_patient` images."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:32, :32]
    for i in range(patients * per_patient):
        cy, cx = rng.integers(10, 22, size=2)
        label = ((yy - cy) ** 2 + (xx - cx) ** 2 < 30).astype(np.uint8)
        image = (40 + 80 * label + rng.normal(0, 10, label.shape)).clip(0, 255).astype(np.uint8)
        name = f"p{i // per_patient}_s{i}.png"
        Image.fromarray(image).save(root / "images" / name)
        Image.fromarray(label * 255).save(root / "masks" / name)
    return root


def write_cls_data(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name, colour in {"ants": (200, 40, 40), "bees": (40, 40, 200)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (np.array(colour) + rng.normal(0, 30, (24, 24, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.png")
    return root


def test_classification_folds_split_the_images_and_refuse_a_given_val_set(tmp_path):
    data = write_cls_data(tmp_path / "img")
    val_sets = []
    for fold in range(2):
        overrides = [*CLS_FAST, f"data.root={data}", "data.num_folds=2", f"data.fold={fold}"]
        train, val, how = ClassificationTask(
            load_config(CLS_CONFIG, overrides, ClassificationConfig)
        )._split()
        assert not {s.path for s in train} & {s.path for s in val} and "fold" in how
        assert Counter(s.label for s in val) == {0: 2, 1: 2}  # stratified
        val_sets.append({s.path for s in val})
    assert val_sets[0] | val_sets[1] == set(data.rglob("*.png")) and not val_sets[0] & val_sets[1]
    shutil.copytree(data, tmp_path / "split" / "train")
    shutil.copytree(data, tmp_path / "split" / "val")
    overrides = [*CLS_FAST, f"data.root={tmp_path / 'split'}", "data.num_folds=5"]
    task = ClassificationTask(load_config(CLS_CONFIG, overrides, ClassificationConfig))
    for call in (task.fold_units, task.build_datasets):
        with pytest.raises(DataError, match=r"data.num_folds=5: k-fold .* a validation set is given"):
            call()


def test_train_cv_refuses_bad_folds_and_unsupported_tasks(tmp_path, capsys):
    data = write_seg_data(tmp_path / "seg")
    seg = [str(SEG_CONFIG), *SEG_FAST, f"data.root={data}", f"output_dir={tmp_path / 'cv'}"]
    assert train_cv.main([*seg, "--folds", "1"]) == 2
    assert "--folds 1: k-fold cross-validation needs at least 2 folds" in capsys.readouterr().err
    assert train_cv.main([*seg, "--folds", "4"]) == 2
    assert "--folds 4: the data has only 3 case(s)" in capsys.readouterr().err
    assert train_cv.main([*seg, "data.fold=1"]) == 2
    assert "sets data.fold" in capsys.readouterr().err
    with pytest.raises(
        CrossValidationError, match="is a detection config: .* classification and segmentation"
    ):
        cross_validate(str(ROOT / "configs" / "demo" / "detection.yaml"), [f"output_dir={tmp_path}"], 2)
    assert not (tmp_path / "cv").exists()  # refused before anything was written


# ------------------------------------------------------------------------------------- end to end


def nulls(metrics: dict) -> dict:
    """NaN as strict JSON stores it (null)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


def check_summary_matches_the_folds(summary: dict, root: Path, splits: Splits) -> None:
    """cv_summary.json: every fold's metrics are its eval.json; mean and std are theirs (NaN left out)."""
    assert json.loads((root / "cv_summary.json").read_text()) == summary
    for i, fold in enumerate(summary["folds"]):
        record = json.loads((fold_dir(root, i) / "eval.json").read_text())
        best = str(fold_dir(root, i) / "checkpoints" / "best.pt")
        assert record.pop("weights") == best == fold["checkpoint"]
        assert fold["metrics"] == nulls(record)
    for name, mean in summary["mean"].items():
        values = [f["metrics"][name] for f in summary["folds"] if f["metrics"][name] is not None]
        if not values:
            assert mean is None and summary["std"][name] is None
            continue
        assert mean == pytest.approx(np.mean(values)) and summary["std"][name] == pytest.approx(
            np.std(values)
        )


@pytest.mark.slow
def test_segmentation_cross_validation_end_to_end(tmp_path, capsys):
    data, root = write_seg_data(tmp_path / "seg"), tmp_path / "cv"
    args = [str(SEG_CONFIG), "--folds", "2", *SEG_FAST, f"data.root={data}", "--output-dir", str(root)]
    assert train_cv.main(args) == 0
    assert "dice_mean" in capsys.readouterr().out  # the table
    splits = read_splits(root / "splits.json")
    assert splits.kind == "case" and sorted(u for f in splits.folds for u in f) == ["p0", "p1", "p2"]
    summary = json.loads((root / "cv_summary.json").read_text())
    check_summary_matches_the_folds(summary, root, splits)
    assert summary["pooled"]["hd95/membrane"] is None  # eval.hd95=false: NaN everywhere, stored as null
    rows = []
    for i in range(2):
        fold_summary = json.loads((fold_dir(root, i) / "seg_summary.json").read_text())
        assert {r["case"] for r in fold_summary["per_case"]} == splits.val(i)  # validated on its own fold
        rows += fold_summary["per_case"]
    # Pooled as nnU-Net: the mean over all validation cases of all folds (not the mean of fold means).
    per_class = {
        name: np.nanmean([np.nan if r[f"dice/{name}"] is None else r[f"dice/{name}"] for r in rows])
        for name in ("membrane", "cell_interior")
    }
    assert summary["pooled"]["dice_mean"] == pytest.approx(np.mean(list(per_class.values())))

    stamp = (fold_dir(root, 0) / "summary.json").stat().st_mtime_ns
    assert train_cv.main(args) == 0  # rerun: splits reused, finished folds skipped
    assert (fold_dir(root, 0) / "summary.json").stat().st_mtime_ns == stamp
    assert json.loads((root / "cv_summary.json").read_text()) == summary

    assert predict_seg.main([str(root), str(data / "images"), str(tmp_path / "masks"), "--no-overlays"]) == 0
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == sorted(
        p.name for p in (data / "images").glob("*.png")
    )
    # An "ensemble" of one checkpoint twice predicts what that checkpoint predicts alone.
    twins = tmp_path / "twins"
    for i in range(2):
        (fold_dir(twins, i) / "checkpoints").mkdir(parents=True)
        shutil.copy(fold_dir(root, 0) / "checkpoints" / "best.pt", fold_dir(twins, i) / "checkpoints")
    shutil.copy(root / "splits.json", twins)
    single = fold_dir(root, 0) / "checkpoints" / "best.pt"
    for source, out in ((twins, "twins_masks"), (single, "single_masks")):
        assert (
            predict_seg.main([str(source), str(data / "images"), str(tmp_path / out), "--no-overlays"]) == 0
        )
    for mask in (tmp_path / "single_masks").glob("*.png"):
        assert np.array_equal(
            np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "twins_masks" / mask.name))
        )


@pytest.mark.slow
def test_classification_cross_validation_end_to_end(tmp_path):
    data, root = write_cls_data(tmp_path / "img"), tmp_path / "cv"
    cross_validate(str(CLS_CONFIG), [*CLS_FAST, f"data.root={data}", f"output_dir={root}"], 2)
    summary = json.loads((root / "cv_summary.json").read_text())
    splits = read_splits(root / "splits.json")
    assert splits.kind == "image" and len(splits.val(0)) == len(splits.val(1)) == 4
    check_summary_matches_the_folds(summary, root, splits)
    sizes = []
    for i in range(2):
        with (fold_dir(root, i) / "predictions.csv").open() as handle:
            paths = [Path(row["path"]).relative_to(data).as_posix() for row in csv.DictReader(handle)]
        assert set(paths) == splits.val(i)
        sizes.append(len(paths))
    # Pooled top-1 counts every image once: the fold accuracies weighted by their sizes.
    weighted = sum(f["metrics"]["top1"] * n for f, n in zip(summary["folds"], sizes)) / sum(sizes)
    assert summary["pooled"]["top1"] == pytest.approx(weighted)
    assert math.isfinite(summary["pooled"]["recall_macro"])

    out = tmp_path / "predictions.csv"
    assert predict_cls.main([str(root), str(data / "ants"), "--out", str(out)]) == 0
    with out.open() as handle:
        assert sorted(row["image"] for row in csv.DictReader(handle)) == [f"ants_{i}.png" for i in range(4)]
