"""tools/predict_cls.py: the checkpoint alone classifies a folder as the run's own evaluation did."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tools import predict_cls, train_cls

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "classification" / "resnet18_imagefolder.yaml")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_predictions_match_the_runs_evaluation(image_folder, tmp_path, tiny, capsys):
    run = tmp_path / "run"
    assert train_cls.main([CONFIG, *tiny(image_folder, run, "data.val_fraction=0.5", "train.epochs=2")]) == 0
    evaluated = {Path(r["path"]).name: r for r in _rows(run / "predictions.csv")}
    # A flat folder of the validation images, away from the training data (which predict never reads).
    photos = tmp_path / "photos"
    photos.mkdir()
    for row in _rows(run / "predictions.csv"):
        shutil.copy(row["path"], photos / Path(row["path"]).name)
    shutil.rmtree(image_folder)

    out = tmp_path / "pred.csv"
    assert predict_cls.main([str(run / "checkpoints" / "last.pt"), str(photos), "--out", str(out)]) == 0
    assert f"{len(evaluated)} images -> {out}" in capsys.readouterr().out
    rows = _rows(out)
    assert sorted(r["image"] for r in rows) == sorted(evaluated)
    for row in rows:
        seen = evaluated[row["image"]]
        assert row["class"] == row["class1"] == seen["prediction"]
        assert float(row["score"]) == pytest.approx(float(seen["confidence"]), abs=1e-5)
        assert float(row["score1"]) >= float(row["score2"])
        assert {row["class1"], row["class2"]} == {"ants", "bees"}  # top-k capped at the 2 classes
        assert float(row["score1"]) + float(row["score2"]) == pytest.approx(1.0, abs=1e-5)

    assert predict_cls.main([str(run / "checkpoints" / "last.pt"), str(tmp_path / "nowhere")]) == 2
    assert "image folder" in capsys.readouterr().err
