"""Raccoon held-out protocol: a seeded part of the annotated images never seen in training, COCO AP.

    python experiments/raccoon_protocol.py make --root ../shared/data/raccoon/train
    python experiments/raccoon_protocol.py score --checkpoint runs/det_raccoon/checkpoints/last.pt

`make` writes, under --out (default runs/raccoon_protocol), train.json and test.json (COCO subsets of
<root>/annotations.json, --test-fraction of the images, seeded) and test_images/ (symlinks to the test
images). Train with `data.train_ann=<out>/train.json data.train_images=<root>/images data.val_fraction=0`
(nothing is chosen on the test images; the final epoch is scored).

`score` runs tools/predict_det.py on test_images/ with --gt test.json (exactly as a user would), then
prints COCO AP and AP50 with 95% bootstrap intervals over test images (--boot resamples).
The dataset's official 40-image test split is not on these machines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
from pathlib import Path

import numpy as np

from tasks.detection.metrics import CocoEvaluator
from tools import predict_det


def make(root: Path, out: Path, test_fraction: float, seed: int) -> None:
    """Write train.json, test.json and test_images/ (see the module docstring)."""
    coco = json.loads((root / "annotations.json").read_text())
    ids = sorted(img["id"] for img in coco["images"])
    random.Random(seed).shuffle(ids)
    test_ids = set(ids[: round(len(ids) * test_fraction)])
    (out / "test_images").mkdir(parents=True, exist_ok=True)
    for name, keep in (("train", lambda i: i not in test_ids), ("test", lambda i: i in test_ids)):
        part = {
            **coco,
            "images": [img for img in coco["images"] if keep(img["id"])],
            "annotations": [a for a in coco["annotations"] if keep(a["image_id"])],
        }
        (out / f"{name}.json").write_text(json.dumps(part))
        print(f"{out / name}.json: {len(part['images'])} images, {len(part['annotations'])} boxes")
    for img in coco["images"]:
        if img["id"] in test_ids:
            link = out / "test_images" / img["file_name"]
            link.unlink(missing_ok=True)
            link.symlink_to((root / "images" / img["file_name"]).resolve())


def resample(gt: dict, results: list[dict], picks: list[int]) -> tuple[dict, list[dict]]:
    """Ground truth and detections of the images ``picks`` (with repeats), each copy under a new id."""
    by_id = {img["id"]: img for img in gt["images"]}
    boxes: dict[int, list] = {}
    for a in gt["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a)
    dets: dict[int, list] = {}
    for r in results:
        dets.setdefault(r["image_id"], []).append(r)
    images, annotations, detections = [], [], []
    for new_id, old_id in enumerate(picks, start=1):
        images.append({**by_id[old_id], "id": new_id})
        annotations += [
            {**a, "id": len(annotations) + k + 1, "image_id": new_id}
            for k, a in enumerate(boxes.get(old_id, []))
        ]
        detections += [{**r, "image_id": new_id} for r in dets.get(old_id, [])]
    return {**gt, "images": images, "annotations": annotations}, detections


def bootstrap(gt: dict, results: list[dict], boot: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of AP and AP50 over ``boot`` resamples of the test images."""
    rng = random.Random(seed)
    ids = [img["id"] for img in gt["images"]]
    samples = {"AP": [], "AP50": []}
    for _ in range(boot):
        part_gt, part_results = resample(gt, results, [rng.choice(ids) for _ in ids])
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints every evaluation
            metrics, _ = CocoEvaluator(part_gt).evaluate(part_results)
        for key in samples:
            samples[key].append(metrics[key])
    return {key: tuple(np.percentile(values, [2.5, 97.5]).tolist()) for key, values in samples.items()}


def score(checkpoint: str, out: Path, boot: int) -> dict:
    """COCO AP/AP50 of the checkpoint on the test images, with bootstrap intervals."""
    predictions = out / "predictions"
    predict_det.main([checkpoint, str(out / "test_images"), "--gt", str(out / "test.json"),
                      "--out", str(predictions), "--max-drawn", "0"])  # fmt: skip
    gt = json.loads((out / "test.json").read_text())
    results = json.loads((predictions / "results.json").read_text())
    metrics, _ = CocoEvaluator(gt).evaluate(results)
    intervals = bootstrap(gt, results, boot)
    result = {
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "interval": intervals,
        "images": len(gt["images"]),
    }
    print(
        f"AP {metrics['AP']:.3f} [{intervals['AP'][0]:.3f}, {intervals['AP'][1]:.3f}], "
        f"AP50 {metrics['AP50']:.3f} [{intervals['AP50'][0]:.3f}, {intervals['AP50'][1]:.3f}] "
        f"on {len(gt['images'])} test images"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make_p = sub.add_parser("make")
    make_p.add_argument("--root", type=Path, default=Path("../shared/data/raccoon/train"))
    make_p.add_argument("--test-fraction", type=float, default=0.3)
    make_p.add_argument("--seed", type=int, default=0)
    score_p = sub.add_parser("score")
    score_p.add_argument("--checkpoint", required=True)
    score_p.add_argument("--boot", type=int, default=200)
    score_p.add_argument("--json", type=Path, default=None)
    for p in (make_p, score_p):
        p.add_argument("--out", type=Path, default=Path("runs/raccoon_protocol"))
    args = parser.parse_args(argv)
    if args.command == "make":
        make(args.root, args.out, args.test_fraction, args.seed)
    else:
        result = score(args.checkpoint, args.out, args.boot)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
