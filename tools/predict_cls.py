"""Run a trained classifier on a folder of images: a CSV of the predicted classes and their scores.

Example:
    python tools/predict_cls.py runs/cls_resnet50_finetune/checkpoints/best.pt photos/ --out predictions.csv
"""

from __future__ import annotations

import argparse
from collections import Counter

from tasks.classification.predict import predict_images, write_predictions
from tasks.classification.transforms import build_eval_transform
from tasks.common.images import list_images
from tasks.common.tta import add_tta_argument, tta_from_cli
from tasks.engine.cli import exits_on_user_error
from tasks.engine.ensemble import inference_ensemble, load_trained_models


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint",
        help="checkpoints/best.pt (or last.pt) of a tools/train_cls.py run, or the output folder of "
        "tools/train_cv.py (every fold's best.pt, softmax probabilities averaged)",
    )
    parser.add_argument("images", help="folder of images")
    parser.add_argument("--out", default="predictions.csv", help="CSV to write (one row per image)")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per image")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    add_tta_argument(parser)
    args = parser.parse_args(argv)
    members = load_trained_models(args.checkpoint)  # EMA weights when the run kept them
    trained = members[0]
    classes = trained.task.classes
    paths = list_images(args.images)
    transform = build_eval_transform(trained.cfg.data)
    model = inference_ensemble(members, args.device)  # BN folded, channels-last; folds averaged
    tta = tta_from_cli(args.tta, trained.cfg.eval.tta)
    probs = predict_images(model, paths, transform, args.device, args.batch_size, tta)
    write_predictions(args.out, paths, probs, classes, args.top_k)
    counts = Counter(classes[i] for i in probs.argmax(dim=1).tolist())
    print(f"{len(paths)} images -> {args.out}; predicted: {dict(sorted(counts.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
