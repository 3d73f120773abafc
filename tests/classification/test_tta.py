"""eval.tta in classification: --eval-only and tools/predict_cls.py average the flipped views' softmax."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from tasks.classification.transforms import build_eval_transform
from tasks.common.images import read_pil
from tasks.engine.loading import load_trained_model
from tools import predict_cls, train_cls

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "classification" / "resnet18_imagefolder.yaml")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_eval_only_and_predict_average_the_flips(image_folder, tmp_path, tiny, capsys):
    run = tmp_path / "run"
    argv = [CONFIG, *tiny(image_folder, run, "data.val_fraction=0.5")]
    assert train_cls.main(argv) == 0
    ckpt = run / "checkpoints" / "last.pt"
    plain = {r["path"]: float(r["confidence"]) for r in _rows(run / "predictions.csv")}
    assert train_cls.main([*argv, "eval.tta=[hflip]", "--eval-only", "--weights", str(ckpt)]) == 0
    evaluated = _rows(run / "predictions.csv")

    # The reference: mean of the softmax of each image and of its mirror image, by hand.
    trained = load_trained_model(ckpt)
    transform = build_eval_transform(trained.cfg.data)
    with torch.no_grad():
        for row in evaluated:
            x = transform(read_pil(row["path"]))[None]
            probs = (trained.model(x).softmax(1) + trained.model(x.flip(-1)).softmax(1)) / 2
            assert float(row["confidence"]) == pytest.approx(float(probs.max()), abs=1e-5)
            assert row["prediction"] == trained.task.classes[int(probs.argmax())]
    assert [float(r["confidence"]) for r in evaluated] != list(plain.values())  # the flips did count

    photos = tmp_path / "photos"
    photos.mkdir()
    for row in evaluated:
        shutil.copy(row["path"], photos / Path(row["path"]).name)
    out = tmp_path / "pred.csv"
    assert predict_cls.main([str(ckpt), str(photos), "--out", str(out), "--tta", "hflip"]) == 0
    by_name = {Path(r["path"]).name: r for r in evaluated}
    for row in _rows(out):
        assert row["class"] == by_name[row["image"]]["prediction"]
        assert float(row["score"]) == pytest.approx(float(by_name[row["image"]]["confidence"]), abs=1e-5)
    assert predict_cls.main([str(ckpt), str(photos), "--out", str(out), "--tta", "none"]) == 0
    scores = {row["image"]: float(row["score"]) for row in _rows(out)}
    assert scores == pytest.approx({Path(p).name: c for p, c in plain.items()}, abs=1e-5)


def test_bad_tta_is_a_clean_error(image_folder, tmp_path, tiny, capsys):
    argv = [CONFIG, *tiny(image_folder, tmp_path / "run", "eval.tta=[hflip,flop]")]
    assert train_cls.main(argv) == 2
    err = capsys.readouterr().err
    assert "eval.tta=['hflip', 'flop']: unknown transform 'flop'" in err and "rotate90" in err
    assert not (tmp_path / "run").exists()
