"""Detection speed, side by side with torchvision's fasterrcnn_resnet50_fpn in one process.

Rows: training step and inference (default fp32 path, and the fast path = bf16 autocast + channels-last)
against torchvision fp32, torchvision's own autocast for reference, and COCO evaluation against plain
pycocotools on the same detections. Ratios > 1 mean ours is faster.

    python tools/benchmark_det.py            # 800/1333 px, batch 2 (slow on a CPU)
    python tools/benchmark_det.py --quick    # 320/512 px
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402
from torchvision.models.detection import fasterrcnn_resnet50_fpn  # noqa: E402

from backbones import resnet50  # noqa: E402
from tasks.detection.evaluation import CocoEvaluator  # noqa: E402
from tasks.detection.model import build_faster_rcnn, load_torchvision_detector_weights  # noqa: E402


def _timed(fn, iters: int) -> float:
    """Median seconds of ``fn()`` over ``iters`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _train_step(model, images, targets, optimizer, fast: bool):
    def step():
        with _autocast(fast):
            loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _infer(model, images, fast: bool):
    def run():
        with torch.no_grad(), _autocast(fast):
            model(images)

    return run


def detector_rows(quick: bool, iters: int | None = None) -> list[dict]:
    size, max_size, default_iters = (320, 512, 2) if quick else (800, 1333, 3)
    iters = iters or default_iters
    torch.manual_seed(0)
    anchor = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=size, max_size=max_size)
    ours = build_faster_rcnn(resnet50(), 91, min_size=size, max_size=max_size)
    load_torchvision_detector_weights(
        ours, anchor.state_dict()
    )  # same weights -> same work in post-processing
    ours_fast = build_faster_rcnn(resnet50(), 91, min_size=size, max_size=max_size)
    ours_fast.load_state_dict(ours.state_dict())
    ours_fast.to(memory_format=torch.channels_last)
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
        "anchor_bf16": (anchor, True),
        "ours": (ours, False),
        "ours_fast": (ours_fast, True),
    }
    train, infer = {}, {}
    for name, (model, fast) in models.items():
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
        train[name] = _timed(_train_step(model, images, targets, optimizer, fast), iters)
    for name, (model, fast) in models.items():
        model.eval()
        infer[name] = len(images) / _timed(_infer(model, images, fast), iters)
    shape = f"{len(images)}x{h}x{w}"
    rows = [
        dict(
            name=f"train step, default fp32 ({shape})",
            ours=train["ours"],
            anchor=train["anchor"],
            unit="s/step",
            ratio=train["anchor"] / train["ours"],
            target=">= 1.0x",
        ),
        dict(
            name=f"train step, bf16 autocast + channels_last ({shape})",
            ours=train["ours_fast"],
            anchor=train["anchor"],
            unit="s/step",
            ratio=train["anchor"] / train["ours_fast"],
            target=">= 2.0x",
        ),
        dict(
            name="  reference: torchvision under bf16 autocast",
            ours=train["anchor_bf16"],
            anchor=train["anchor"],
            unit="s/step",
            ratio=train["anchor"] / train["anchor_bf16"],
            target="(info)",
        ),
        dict(
            name=f"inference, default fp32 ({shape})",
            ours=infer["ours"],
            anchor=infer["anchor"],
            unit="img/s",
            ratio=infer["ours"] / infer["anchor"],
            target=">= 1.0x",
        ),
        dict(
            name=f"inference, bf16 autocast + channels_last ({shape})",
            ours=infer["ours_fast"],
            anchor=infer["anchor"],
            unit="img/s",
            ratio=infer["ours_fast"] / infer["anchor"],
            target=">= 1.6x",
        ),
        dict(
            name="  reference: torchvision under bf16 autocast",
            ours=infer["anchor_bf16"],
            anchor=infer["anchor"],
            unit="img/s",
            ratio=infer["anchor_bf16"] / infer["anchor"],
            target="(info)",
        ),
    ]
    return rows


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


def eval_rows(quick: bool) -> list[dict]:
    gt, dets = synthetic_coco(50 if quick else 500)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(dets))

        def plain():
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(str(gt_path))
                e = COCOeval(coco, coco.loadRes(str(dt_path)), "bbox")
                e.evaluate()
                e.accumulate()
                e.summarize()
            return e.stats

        evaluator = CocoEvaluator(gt)  # built once per validation set, as the task does
        start = time.perf_counter()
        reference = plain()
        anchor_s = time.perf_counter() - start
        start = time.perf_counter()
        metrics, _ = evaluator.evaluate(dets)
        ours_s = time.perf_counter() - start
    identical = bool(np.array_equal(list(metrics.values()), reference))
    return [
        dict(
            name=f"COCO eval, {len(gt['images'])} images x 100 dets (numbers identical: {identical})",
            ours=ours_s,
            anchor=anchor_s,
            unit="s",
            ratio=anchor_s / ours_s,
            target="identical",
        )
    ]


def run(quick: bool = False, iters: int | None = None) -> list[dict]:
    """All detection benchmark rows (see the module docstring); ``iters`` timed calls after one warm-up."""
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return detector_rows(quick, iters) + eval_rows(quick)


def machine() -> str:
    """CPU model, threads, torch version and whether bf16 runs natively (it decides the fast path)."""
    from tasks.engine.runtime import cpu_has_native_bf16

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    isa = torch.backends.cpu.get_cpu_capability()
    return (
        f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}, ISA {isa}, "
        f"native bf16 (AVX512-BF16/AMX): {cpu_has_native_bf16()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Faster R-CNN speed: ours vs torchvision")
    parser.add_argument("--quick", action="store_true", help="320 px images and fewer iterations")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per row (default 3, quick 2)")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, iters=args.iters)
    print(f"machine: {machine()}")
    print(f"{'benchmark':<62} {'ours':>10} {'anchor':>10} {'unit':>7} {'ratio':>7}  target")
    for r in rows:
        print(
            f"{r['name']:<62} {r['ours']:>10.4g} {r['anchor']:>10.4g} {r['unit']:>7} {r['ratio']:>6.2f}x  "
            f"{r['target']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
