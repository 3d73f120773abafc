"""Run a trained detector on a folder of images: COCO results JSON + PNGs with drawn boxes.

Example:
    python tools/predict_det.py runs/det_r18_cpu/checkpoints/best.pt photos/ --out predictions/ \
        --gt photos/annotations.json      # optional: image ids from, and COCO metrics against, this file
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.common.images import list_images
from tasks.common.tta import add_tta_argument, tta_from_cli
from tasks.detection.data_check import DatasetError, load_coco_json
from tasks.detection.metrics import CocoEvaluator, detections_to_coco
from tasks.detection.predict import predict_images
from tasks.detection.validation import check_eval
from tasks.detection.visualize import draw_detections, save_png
from tasks.engine.cli import exits_on_user_error
from tasks.engine.loading import load_trained_model


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoints/best.pt (or last.pt) of a tools/train_det.py run")
    parser.add_argument("images", help="folder of images")
    parser.add_argument("--out", default="predictions", help="output folder (results.json, drawn/*.png)")
    parser.add_argument(
        "--gt", default=None, help="COCO annotations of these images: use their ids and score"
    )
    parser.add_argument("--score-thresh", type=float, default=0.3, help="minimum score of drawn boxes")
    parser.add_argument("--max-drawn", type=int, default=20, help="draw at most this many images (0: none)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    add_tta_argument(parser)
    parser.add_argument(
        "--tta-min-sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="SIZE",
        help="test-time scales: short sides to detect at (default: the checkpoint's eval.tta_min_sizes; "
        "--tta none clears them too)",
    )
    args = parser.parse_args(argv)
    trained = load_trained_model(args.checkpoint)  # EMA weights when the run kept them
    _override_tta(trained.cfg.eval, args)
    model = trained.task.tta_model(trained.inference_model(args.device))  # BN folded; TTA if asked for
    cmap = trained.task.categories()
    paths = list_images(args.images)
    if args.gt:
        gt = load_coco_json(args.gt)
        ids = {img["file_name"]: img["id"] for img in gt["images"]}
        missing = [p.name for p in paths if p.name not in ids]
        if missing:
            raise DatasetError(f"{args.gt} has no entry for {len(missing)} image(s), e.g. {missing[:5]}")
        image_ids = [ids[p.name] for p in paths]
    else:
        image_ids = list(range(1, len(paths) + 1))
    predictions = predict_images(model, paths, args.device, args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = detections_to_coco([o for _, o in predictions], image_ids, cmap)
    (out / "results.json").write_text(json.dumps(results))
    (out / "images.json").write_text(
        json.dumps([{"id": i, "file_name": p.name} for i, p in zip(image_ids, paths)])
    )
    names = ["background", *cmap.names]
    for path, (image, o) in list(zip(paths, predictions))[: args.max_drawn]:
        drawn = draw_detections(
            image, o["boxes"], o["labels"], o["scores"], names, score_thresh=args.score_thresh
        )
        save_png(drawn, out / "drawn" / f"{path.stem}.png")
    print(f"{len(results)} detections on {len(paths)} images -> {out / 'results.json'}")
    if args.gt:
        metrics, _ = CocoEvaluator(gt).evaluate(results, source=str(out / "results.json"))
        print(json.dumps(metrics, indent=2))
    return 0


def _override_tta(eval_cfg, args: argparse.Namespace) -> None:
    """--tta and --tta-min-sizes in place of the checkpoint's eval.tta and eval.tta_min_sizes."""
    eval_cfg.tta = tta_from_cli(args.tta, eval_cfg.tta)
    if args.tta_min_sizes is not None:
        eval_cfg.tta_min_sizes = list(args.tta_min_sizes)
    elif args.tta == ["none"]:
        eval_cfg.tta_min_sizes = []
    check_eval(eval_cfg)


if __name__ == "__main__":
    raise SystemExit(main())
