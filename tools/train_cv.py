"""K-fold cross-validation of a classification or segmentation config, then its folds as one ensemble.

    python tools/train_cv.py configs/segmentation/unet_r34_membrane.yaml --folds 5 data.root=DIR
    python tools/predict_seg.py runs/seg_cv IMAGES_DIR OUT_DIR      # the 5 folds' mean probability
    python tools/predict_cls.py runs/cls_cv photos/ --out predictions.csv

Writes OUTPUT_DIR/splits.json (the folds, by case or by image: made once, reused on every rerun),
OUTPUT_DIR/fold_<i>/ (an ordinary run folder per fold: a rerun skips finished folds and resumes an
interrupted one) and OUTPUT_DIR/cv_summary.json (per-fold, mean, std and pooled metrics; the table is
printed). See docs/engine.md, "Cross-validation".
"""

from __future__ import annotations

from tasks.engine.crossval import run_cross_validation_tool


def main(argv: list[str] | None = None) -> int:
    """Entry point; see `--help`."""
    return run_cross_validation_tool(argv)


if __name__ == "__main__":
    raise SystemExit(main())
