"""Detection speed, side by side with torchvision's fasterrcnn_resnet50_fpn in one process.

    python -m benchmarks.detection            # 800/1333 px, batch 2 (slow on a CPU)
    python -m benchmarks.detection --quick    # 320/512 px

Rows: training step and inference (our default path = fp32 with channels-last weights, as train_det runs
by default; the same in torchvision's NCHW format; and the fast path = bf16 autocast + channels-last)
against torchvision fp32, torchvision's own autocast for reference, ours against torchvision given the
same bf16 autocast and channels-last (ours steps with the engine's fused SGD), and COCO evaluation
against plain pycocotools on the same detections. Ratios > 1 mean ours is faster.

Each round calls every model once, in an order that rotates from round to round, and each ratio is the
median over rounds of the per-round ratio. A control row times torchvision against a second copy of
itself: its distance from 1.00x is the noise of the machine, the margin within which ours and the anchor
are not told apart (both run the same torchvision ops; only the backbone module differs).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from backbones import resnet50
from benchmarks.peak import forward_flops, utilisation
from benchmarks.report import area_parser, bf16_target, measure_bf16, row, show, untimed_bf16_row
from benchmarks.timing import time_rounds
from tasks.detection.metrics import CocoEvaluator, same_coco_numbers
from tasks.detection.model import build_faster_rcnn, load_torchvision_detector_weights


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _train_step(model, images, targets, fast: bool, fused: bool = False):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-5, momentum=0.9, fused=fused)

    def step():
        with _autocast(fast):
            loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _infer(model, images, fast: bool):
    model.eval()

    def run():
        with torch.no_grad(), _autocast(fast):
            model(images)

    return run


def detector_rows(quick: bool, rounds: int | None = None) -> list[dict]:
    """Training step and inference of seven models (ours in three settings, torchvision fp32, bf16 and
    bf16 + channels-last, a control copy)."""
    size, max_size, default_rounds = (320, 512, 2) if quick else (800, 1333, 3)
    rounds = rounds or default_rounds
    torch.manual_seed(0)

    def torchvision_model():
        return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=size, max_size=max_size)

    def our_model(memory_format=torch.contiguous_format):
        model = build_faster_rcnn(resnet50(), 91, min_size=size, max_size=max_size)
        load_torchvision_detector_weights(model, anchor.state_dict())  # same weights -> same work
        return model.to(memory_format=memory_format)

    anchor = torchvision_model()
    anchor_bf16, anchor_bf16_cl, control = torchvision_model(), torchvision_model(), torchvision_model()
    anchor_bf16.load_state_dict(anchor.state_dict())
    anchor_bf16_cl.load_state_dict(anchor.state_dict())
    anchor_bf16_cl.to(memory_format=torch.channels_last)  # the same two tricks as ours_fast
    # A second copy of the anchor measures the noise floor: its ratio to the anchor would be 1.00x on a
    # quiet, exclusive machine.
    control.load_state_dict(anchor.state_dict())
    h, w = size, int(size * 4 / 3)
    images = [torch.rand(3, h, w), torch.rand(3, h, w)]
    targets = [
        {
            "boxes": torch.tensor(
                [[w * 0.1, h * 0.1, w * 0.5, h * 0.6], [w * 0.4, h * 0.3, w * 0.9, h * 0.9]]
            ),
            "labels": torch.tensor([1, 5]),
        }
        for _ in images
    ]
    models = {
        "anchor": (anchor, False),
        "anchor_bf16": (anchor_bf16, True),
        "anchor_bf16_cl": (anchor_bf16_cl, True),
        "ours": (our_model(torch.channels_last), False),  # what train_det does (train.channels_last=true)
        "ours_nchw": (our_model(), False),
        "ours_fast": (our_model(torch.channels_last), True),
        "control": (control, False),
    }
    if not measure_bf16():
        del models["anchor_bf16"], models["anchor_bf16_cl"], models["ours_fast"]
    # Inference first, while all models still hold the same weights. Every call starts from the same RNG
    # seed, so the RPN and RoI samplers draw the same boxes for every model in training.
    infer = time_rounds({k: _infer(m, images, fast) for k, (m, fast) in models.items()}, rounds, seed=0)
    # Ours trains with the engine's fused SGD step (tasks.engine.optim.can_fuse); torchvision with torch's
    # default SGD, as a user's loop would.
    train = time_rounds(
        {
            k: _train_step(m, images, targets, fast, fused=k.startswith("ours"))
            for k, (m, fast) in models.items()
        },
        rounds,
        seed=0,
    )
    shape = f"{len(images)}x{h}x{w}"
    n = len(images)
    settings = [
        ("ours", f"default: fp32, channels_last ({shape})", ">= 1.0x"),
        ("ours_nchw", "  ours in the anchor's memory format (fp32, NCHW): same ops", "(info)"),
        ("ours_fast", f"bf16 autocast + channels_last ({shape})", None),
        ("anchor_bf16", "  reference: torchvision under bf16 autocast", "(info)"),
        ("control", "  control: torchvision vs a second copy of itself", "(noise)"),
    ]
    # Inference FLOPs per image (the RPN's and RoI heads' convolutions and matmuls included; NMS and
    # RoIAlign are not counted): the utilisation of the inference rows of ours.
    flops_per_image = forward_flops(models["ours"][0], images) / n
    rows = []
    for kind, times, unit, fast_target in (
        ("train step", train, "s/step", ">= 2.0x"),
        ("inference", infer, "img/s", ">= 1.6x"),
    ):
        for name, label, target in settings:
            label = label if label.startswith(" ") else f"{kind}, {label}"
            if name not in models:
                rows.append(untimed_bf16_row(label, unit))
                continue
            ours_value, anchor_value = times.median(name), times.median("anchor")
            extra = {}
            if unit == "img/s":
                ours_value, anchor_value = n / ours_value, n / anchor_value
                if name.startswith("ours"):
                    dtype = torch.bfloat16 if models[name][1] else torch.float32
                    extra["util"] = utilisation(ours_value, flops_per_image, dtype)
            target = target or bf16_target(fast_target)
            rows.append(row(label, ours_value, anchor_value, unit, times.ratio(name), target, **extra))
        rows.append(same_tricks_row(kind, times, unit, n))
    return rows


def same_tricks_row(kind: str, times, unit: str, n: int) -> dict:
    """Ours against torchvision given the same bf16 autocast and channels-last weights."""
    label = f"  ours vs torchvision, both bf16 autocast + channels_last ({kind})"
    if "anchor_bf16_cl" not in times.seconds:
        return untimed_bf16_row(label, unit)
    ours_value, anchor_value = times.median("ours_fast"), times.median("anchor_bf16_cl")
    if unit == "img/s":
        ours_value, anchor_value = n / ours_value, n / anchor_value
    ratio = times.ratio("ours_fast", "anchor_bf16_cl")
    return row(label, ours_value, anchor_value, unit, ratio, bf16_target(1.3))


def synthetic_coco(n_images: int, n_classes: int = 80, seed: int = 0) -> tuple[dict, list[dict]]:
    """Ground truth with ~7 boxes per image and 100 scored detections per image (jittered GT + noise)."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in range(n_images)]
    anns, dets = [], []
    for img in images:
        for _ in range(int(rng.integers(1, 14))):
            x, y = rng.uniform(0, 500), rng.uniform(0, 380)
            w, h = rng.uniform(4, 140), rng.uniform(4, 100)
            cat = int(rng.integers(1, n_classes + 1))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": cat,
                    "score": float(rng.random()),
                    "bbox": [x + rng.normal(0, 3), y + rng.normal(0, 3), w, h],
                }
            )
        while sum(d["image_id"] == img["id"] for d in dets[-100:]) < 100:
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": int(rng.integers(1, n_classes + 1)),
                    "score": float(rng.random() * 0.5),
                    "bbox": [
                        rng.uniform(0, 500),
                        rng.uniform(0, 380),
                        rng.uniform(4, 140),
                        rng.uniform(4, 100),
                    ],
                }
            )
    cats = [{"id": c, "name": str(c)} for c in range(1, n_classes + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _pycocotools_from_files(gt_path: Path, dt_path: Path) -> np.ndarray:
    """The textbook pycocotools evaluation: read both JSON files, loadRes, evaluate, accumulate, summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        e = COCOeval(coco, coco.loadRes(str(dt_path)), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def eval_row(n_images: int, rounds: int) -> dict:
    """COCO evaluation of the same detections: ours (ground truth indexed once, as the task does each
    epoch; faster-coco-eval when installed) vs pycocotools from the JSON files, ``rounds`` after a warm-up."""
    gt, dets = synthetic_coco(n_images)
    evaluator = CocoEvaluator(gt)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(dets))
        reference = _pycocotools_from_files(gt_path, dt_path)
        metrics, _ = evaluator.evaluate(dets)
        times = time_rounds(
            {
                "ours": lambda: evaluator.evaluate(dets),
                "anchor": lambda: _pycocotools_from_files(gt_path, dt_path),
            },
            rounds,
        )
    identical = same_coco_numbers(list(metrics.values()), reference)
    name = f"COCO eval ({evaluator.backend}), {n_images} images x 100 dets (numbers identical: {identical})"
    ours_s, anchor_s = times.median("ours"), times.median("anchor")
    return row(name, ours_s, anchor_s, "s", times.ratio("ours"), ">= 2.0, identical")


def eval_rows(quick: bool) -> list[dict]:
    """COCO evaluation rows: 500 images (quick: 100), and 5,000 in the full run."""
    if quick:
        return [eval_row(100, rounds=2)]
    return [eval_row(500, rounds=3), eval_row(5000, rounds=1)]


def run(quick: bool = False, rounds: int | None = None) -> list[dict]:
    """All detection rows (see the module docstring); ``rounds`` timed rounds after a warm-up round."""
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return detector_rows(quick, rounds) + eval_rows(quick)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.detection``: print the machine line and the detection table."""
    parser = area_parser("detection", __doc__, "320 px images, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; --quick 2)")
    args = parser.parse_args(argv)
    show("det", run(quick=args.quick, rounds=args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
