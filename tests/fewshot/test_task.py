"""FewShotTask: split sizes, the checkpoint's split, evaluation without base images, config checks."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from tasks.engine import load_checkpoint
from tasks.fewshot.config import FewShotConfig
from tasks.fewshot.data import FewShotDataError, scan_class_folders
from tasks.fewshot.splits import split_classes
from tasks.fewshot.task import FewShotTask
from tools import train_fewshot

CONFIG = "configs/fewshot/omniglot_baseline.yaml"


def task_for(root: Path, out: Path | None = None, **data) -> FewShotTask:
    cfg = FewShotConfig()
    cfg.data.root, cfg.data.image_size, cfg.data.val_n_way, cfg.data.val_q_query = str(root), 32, 2, 2
    cfg.output_dir = str(out or root.parent / "run")
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return FewShotTask(cfg)


# ------------------------------------------------------------------------------------------ split sizes


def test_default_split_of_two_classes_is_an_error(tmp_path, make_tree):
    root = make_tree(tmp_path / "two", groups=0, classes=2, images=3)
    with pytest.raises(
        FewShotDataError,
        match=r"split part 'base' has 1 class\(es\) \(data.split_fractions=\[0.6, 0.2, 0.2\], "
        r"data.split_seed=0, data.split_by=class; 2 classes under .*two\): base training needs at least 2",
    ):
        task_for(root).build_model()


def test_val_part_with_one_class_is_an_error_unless_validation_is_off(tmp_path, make_tree):
    root = make_tree(tmp_path / "five", groups=0, classes=5, images=3)  # 0.6/0.2/0.2 -> 3 / 1 / 1
    with pytest.raises(FewShotDataError, match=r"split part 'val' has 1 class.*data.val_episodes=0"):
        task_for(root).build_datasets()
    train, val = task_for(root, val_episodes=0).build_datasets()
    assert val is None and len(train) == 3 * 3


def test_requested_part_rounded_to_nothing_is_an_error(tmp_path, make_tree):
    root = make_tree(tmp_path / "four", groups=0, classes=4, images=3)
    with pytest.raises(
        FewShotDataError, match=r"split part 'novel' has 0 class\(es\).*leaves this part empty"
    ):
        task_for(root, split_fractions=[0.5, 0.4, 0.1]).build_datasets()
    task = task_for(root, split_fractions=[0.5, 0.5, 0.0])  # no novel part asked for: fine
    task.build_datasets()
    assert task.split_data.split["novel"] == []


def test_tool_stops_on_a_one_class_base_part_before_the_run_folder(tmp_path, make_tree, tiny, capsys):
    root = make_tree(tmp_path / "two", groups=0, classes=2, images=3)
    out = tmp_path / "run"
    assert train_fewshot.main([CONFIG, f"data.root={root}", *tiny, "--output-dir", str(out)]) == 2
    assert "split part 'base' has 1 class(es)" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------ checkpoint meta


def test_resume_adopts_the_checkpoint_split_and_its_base_label_order(nested_tree):
    trained = task_for(nested_tree, split_fractions=[0.5, 0.25, 0.25])
    meta = trained.checkpoint_meta()
    assert meta["base_classes"] == sorted(trained.split_data.split["base"]) and len(meta["base_classes"]) == 4
    resumed = task_for(nested_tree, split_fractions=[0.5, 0.25, 0.25], split_seed=7)
    assert resumed.split_data.split != trained.split_data.split  # the config alone gives another split
    resumed.build_model()
    resumed.adopt_checkpoint_meta(meta, "last.pt", "resume")
    resumed.build_datasets()
    assert resumed.split_data.split == trained.split_data.split
    assert list(resumed.train_index.class_names) == meta["base_classes"]  # head label i = base class i
    assert resumed.checkpoint_meta() == meta


def test_adopt_refuses_what_would_change_the_meaning_of_the_weights(nested_tree, caplog):
    meta = task_for(nested_tree, split_fractions=[0.5, 0.25, 0.25]).checkpoint_meta()
    with pytest.raises(FewShotDataError, match=r"trained on classes that .* lacks \(\['g9/c0'\]\)"):
        task_for(nested_tree).adopt_checkpoint_meta({**meta, "val_classes": ["g9/c0"]}, "a.pt", "eval")
    with pytest.raises(FewShotDataError, match=r"data.rotations=\[0, 90\] but a.pt was trained with \[\]"):
        task_for(nested_tree, rotations=[0, 90]).adopt_checkpoint_meta(meta, "a.pt", "resume")
    wider = task_for(nested_tree, split_fractions=[0.75, 0.125, 0.125], val_episodes=0)  # 6 base classes
    wider.build_model()
    with pytest.raises(
        FewShotDataError, match=r"head for 4 base classes but .* gives 6 now: set data.split_file="
    ):
        wider.adopt_checkpoint_meta(meta, "a.pt", "resume")
    with caplog.at_level(logging.INFO, logger="tasks.fewshot"):
        wider.adopt_checkpoint_meta({**meta, "base_classes": ["g9/c0"]}, "w.pt", "weights")
        wider.adopt_checkpoint_meta({}, "old.pt", "resume")
    assert "w.pt was base-trained on 1 classes, 0 of them among this run's 6" in caplog.text
    assert len(wider.split_data.split["base"]) == 6


def test_eval_dataset_opens_no_base_image(nested_tree):
    task = task_for(nested_tree, split_fractions=[0.5, 0.25, 0.25])
    broken = nested_tree / task.split_data.split["base"][0] / "0.png"
    broken.write_bytes(b"not an image")
    val = task_for(nested_tree, split_fractions=[0.5, 0.25, 0.25]).build_eval_dataset()
    assert len(val) == 2 * 6 and broken.parent not in {Path(p).parent for p in val.paths}
    with pytest.raises(FewShotDataError, match=f"cannot read image {re.escape(str(broken))}"):
        task_for(nested_tree, split_fractions=[0.5, 0.25, 0.25]).build_datasets()


# ------------------------------------------------------------------------------------- through the tool


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_tree, tiny):
    run = tmp_path_factory.mktemp("fewshot_task") / "run"
    assert train_fewshot.main([CONFIG, f"data.root={shared_tree}", *tiny, "--output-dir", str(run)]) == 0
    return shared_tree, run


def test_resume_with_another_split_seed_continues_on_the_checkpoint_split(trained_run, tmp_path, tiny):
    data, run = trained_run
    original = json.loads((run / "split.json").read_text())
    other = split_classes(scan_class_folders(data), [0.5, 0.25, 0.25], seed=1)
    assert other["base"] != original["base"]  # what the config alone would train on
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    args = [CONFIG, f"data.root={data}", *tiny, "data.split_seed=1", "train.epochs=2"]
    assert train_fewshot.main([*args, "--output-dir", str(resumed), "--resume"]) == 0
    saved = json.loads((resumed / "split.json").read_text())
    assert {k: saved[k] for k in ("base", "val", "novel")} == {
        k: original[k] for k in ("base", "val", "novel")
    }
    last = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["task_meta"]["base_classes"] == original["base"]


def test_eval_only_runs_with_a_corrupt_base_image(trained_run, tmp_path, tiny):
    data, run = trained_run
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    split = json.loads((run / "split.json").read_text())
    (broken / split["base"][0] / "0.png").write_bytes(b"not an image")
    out = tmp_path / "eval"
    weights = str(run / "checkpoints" / "last.pt")
    args = [
        CONFIG,
        f"data.root={broken}",
        *tiny,
        "--output-dir",
        str(out),
        "--eval-only",
        "--weights",
        weights,
    ]
    assert train_fewshot.main(args) == 0
    assert 0.0 <= json.loads((out / "eval.json").read_text())["val_acc"] <= 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=-32"], "data.image_size=-32: must be a positive number of pixels"),
        (["model.backbone.in_chans=2"], "model.backbone.in_chans=2: expected one of [1, 3]"),
        (["data.channels=1"], "'data.channels' has moved: write it as 'model.backbone.in_chans'"),
        (["data.augment=true"], "data.augment is a section: set data.augment.rotate/translate/scale/hflip"),
        (["data.augment.rotate=200"], "data.augment.rotate=200: must be in [0, 180]"),
        (["data.augment.hflip=2"], "data.augment.hflip=2: must be in [0, 1]"),
        (["data.augment.fill=300"], "data.augment.fill=300: must be in [0, 255]"),
        (["eval.tta=[rot45]"], "eval.tta=['rot45']: unknown transform 'rot45'"),
        (["data.split_fractions=[0.5,0.6,0.1]"], "data.split_fractions=[0.5, 0.6, 0.1]: expected three"),
        (["data.split_fractions=[0.5,0.5]"], "data.split_fractions=[0.5, 0.5]: expected three shares"),
        (["data.split_by=alphabet"], "data.split_by='alphabet': expected one of ['class', 'group']"),
        (["data.split_file=nowhere.json"], "data.split_file='nowhere.json': file not found"),
        (["data.rotations=[0,45]"], "data.rotations=[0, 45]: every angle must be a multiple of 90"),
        (["data.rotations=[0,360]"], "data.rotations=[0, 360]: an angle (modulo 360) is listed twice"),
        (["data.val_n_way=1"], "data.val_n_way=1: must be >= 2"),
        (["data.val_q_query=0"], "data.val_q_query=0: must be >= 1"),
        (["data.val_episodes=-1"], "data.val_episodes=-1: must be >= 0"),
        (
            ["model.method=maml"],
            "model.method='maml': expected one of ['baseline', 'baseline++', 'protonet']",
        ),
        (["model.cosine_scale=-1"], "model.cosine_scale=-1: must be >= 0"),
        (["model.backbone.stem_type=tiny"], "model.backbone.stem_type='tiny': expected one of"),
        (["model.method=protonet", "data.n_way=1"], "data.n_way=1: must be >= 2"),
        (["model.method=protonet", "data.episodes_per_epoch=0"], "data.episodes_per_epoch=0: must be >= 1"),
    ],
)
def test_bad_values_name_the_key_before_the_run_folder_exists(
    overrides, message, shared_tree, tmp_path, tiny, capsys
):
    out = tmp_path / "run"
    args = [CONFIG, f"data.root={shared_tree}", *tiny, *overrides, "--output-dir", str(out)]
    assert train_fewshot.main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
