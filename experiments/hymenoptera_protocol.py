"""Hymenoptera held-out protocol: a seeded, class-stratified part of the images never seen in training.

    python experiments/hymenoptera_protocol.py make --root ../shared/data/hymenoptera/train
    python experiments/hymenoptera_protocol.py score --checkpoint runs/cls_hymenoptera/checkpoints/last.pt

`make` writes, under --out (default runs/hymenoptera_protocol), train/<class>/ and test/<class>/ folders of
symlinks into --root: --test-fraction of each class (seeded) goes to test/. Train with
`data.root=<out>/train data.val_fraction=0` (no validation part: nothing is chosen on the test images, and
the final epoch is scored).

`score` predicts every test image with the checkpoint through the predict tool's own path (the run's
evaluation transform, BN folded) and prints the accuracy with its 95% Wilson interval; --json writes it.
The dataset's official validation split (153 images) is not on these machines; this holds out part of its
245 training images instead.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from tasks.classification.predict import predict_images
from tasks.classification.transforms import build_eval_transform
from tasks.common.images import list_images
from tasks.engine.loading import load_trained_model


def make(root: Path, out: Path, test_fraction: float, seed: int) -> None:
    """Write the train/ and test/ symlink folders (see the module docstring)."""
    rng = random.Random(seed)
    counts = {}
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        files = list_images(class_dir)
        rng.shuffle(files)
        n_test = round(len(files) * test_fraction)
        # Only what torchvision's ImageFolder reads, so that a plain script sees the same images: this
        # drops the set's one "imageNotFound.gif" placeholder (an image of a message, not of an insect).
        parts = {"test": files[:n_test], "train": files[n_test:]}
        parts = {
            part: [f for f in chosen if f.suffix.lower() in IMG_EXTENSIONS] for part, chosen in parts.items()
        }
        for part, chosen in parts.items():
            folder = out / part / class_dir.name
            folder.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                link = folder / path.name
                link.unlink(missing_ok=True)
                link.symlink_to(path.resolve())
        counts[class_dir.name] = (len(parts["train"]), len(parts["test"]))
    print(f"{out}: train/test images per class {counts}")


def wilson_interval(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n, unlike the normal approximation)."""
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def score(checkpoint: str, out: Path) -> dict:
    """Accuracy of the checkpoint on every image under ``out/test`` (with the run's ``eval.tta``), with its
    interval."""
    trained = load_trained_model(checkpoint)
    model, transform = trained.inference_model("cpu"), build_eval_transform(trained.cfg.data)
    hits = total = 0
    for class_dir in sorted(d for d in (out / "test").iterdir() if d.is_dir()):
        probs = predict_images(model, list_images(class_dir), transform, tta=trained.cfg.eval.tta)
        predicted = probs.argmax(1)
        hits += sum(trained.task.classes[i] == class_dir.name for i in predicted.tolist())
        total += len(predicted)
    low, high = wilson_interval(hits, total)
    result = {"accuracy": hits / total, "low": low, "high": high, "images": total, "checkpoint": checkpoint}
    print(f"accuracy {100 * hits / total:.1f}% [{100 * low:.1f}, {100 * high:.1f}] on {total} test images")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make_p = sub.add_parser("make")
    make_p.add_argument("--root", type=Path, default=Path("../shared/data/hymenoptera/train"))
    make_p.add_argument("--test-fraction", type=float, default=0.4)
    make_p.add_argument("--seed", type=int, default=0)
    score_p = sub.add_parser("score")
    score_p.add_argument("--checkpoint", required=True)
    score_p.add_argument("--json", type=Path, default=None)
    for p in (make_p, score_p):
        p.add_argument("--out", type=Path, default=Path("runs/hymenoptera_protocol"))
    args = parser.parse_args(argv)
    if args.command == "make":
        make(args.root, args.out, args.test_fraction, args.seed)
    else:
        result = score(args.checkpoint, args.out)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
