"""Classification training speed: our engine's default CPU path vs a plain fp32 PyTorch loop.

    python -m benchmarks.classification            # ResNet-50, batch 16, 224x224 (2-4 minutes on 2 cores)
    python -m benchmarks.classification --quick    # fewer steps, no forced-bf16 row

"ours" runs the real engine loop (Trainer.fit on an in-memory dataset: sampler, autocast, backward,
optimizer, scheduler, logging) with the classification defaults; the anchor is the plain fp32 PyTorch
loop a user would write with torchvision's model; a second row gives that loop the same bf16 autocast and
channels-last as ours (on CPUs where the engine picks bf16). Both see the same tensors. The engine's loop
cannot be interleaved call by call with another model, so unlike the other areas the two loops run one
after the other and each reports the median of its per-iteration times, which keeps a busy moment of a shared
machine from deciding the row. A third row times the data loader on JPEG photos through the real
training transforms, to show the loader is not the bottleneck.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.peak import TRAIN_FLOPS_FACTOR, forward_flops, utilisation
from benchmarks.report import area_parser, bf16_target, measure_bf16, row, show, untimed_bf16_row
from tasks.classification.config import ClassificationConfig
from tasks.classification.data import ImageListDataset, scan_image_folder
from tasks.classification.task import ClassificationTask
from tasks.classification.transforms import build_train_transform
from tasks.engine import Trainer
from tasks.engine.runtime import cpu_has_native_bf16


def make_batches(
    batch_size: int, steps: int, image_size: int, num_classes: int, seed: int = 0
) -> TensorDataset:
    """Random images and labels for ``steps`` batches (the same tensors for both sides)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size * steps, 3, image_size, image_size, generator=g)
    labels = torch.randint(0, num_classes, (batch_size * steps,), generator=g)
    return TensorDataset(images, labels)


def anchor_images_per_s(
    data: TensorDataset, batch_size: int, warmup: int, num_classes: int, same_tricks: bool = False
) -> float:
    """Plain fp32 loop: torchvision resnet50, SGD, cross-entropy, contiguous tensors; with
    ``same_tricks`` the same loop under bf16 autocast with channels-last weights and images."""
    torch.manual_seed(0)
    fmt = torch.channels_last if same_tricks else torch.contiguous_format
    model = torchvision.models.resnet50(num_classes=num_classes).train().to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=same_tricks)
    times = []
    for images, labels in loader:
        start = time.perf_counter()
        with autocast:
            loss = nn.functional.cross_entropy(model(images.contiguous(memory_format=fmt)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times[warmup:])


class _InMemoryTask(ClassificationTask):
    """ClassificationTask whose data is the benchmark tensors; records when each step starts."""

    def __init__(self, cfg: ClassificationConfig, data: TensorDataset, num_classes: int) -> None:
        super().__init__(cfg)
        self._data = data
        self._classes = [str(i) for i in range(num_classes)]
        self.stamps: list[float] = []

    def build_datasets(self):
        return self._data, None

    def training_step(self, model, batch, device):
        self.stamps.append(time.perf_counter())
        return super().training_step(model, batch, device)


def engine_images_per_s(
    data: TensorDataset,
    batch_size: int,
    warmup: int,
    num_classes: int,
    amp: str = "auto",
    channels_last: bool = True,
) -> tuple[float, str]:
    """Our default CPU path through Trainer.fit; returns (images/s, resolved amp)."""
    cfg = ClassificationConfig()
    cfg.model.backbone.arch = "resnet50"
    cfg.device = "cpu"
    t = cfg.train
    t.epochs, t.batch_size, t.num_workers, t.amp, t.channels_last = 1, batch_size, 0, amp, channels_last
    t.lr, t.warmup_epochs, t.scheduler, t.plots, t.tensorboard, t.log_every = (
        0.01,
        0,
        "constant",
        False,
        False,
        10**6,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg.output_dir = tmp
        task = _InMemoryTask(cfg, data, num_classes)
        trainer = Trainer(cfg, task)
        trainer.fit()
        end = time.perf_counter()
    stamps = task.stamps + [end]
    # The last interval also includes the end-of-epoch checkpoint write: leave it out.
    intervals = [b - a for a, b in zip(stamps[:-2], stamps[1:-1])]
    return batch_size / statistics.median(intervals[warmup:]), str(trainer.amp_dtype or "off")


def loader_images_per_s(num_images: int = 96, image_size: int = 224, num_workers: int = 2) -> float:
    """Decode + RandomResizedCrop/flip/jitter + normalise JPEG photos through a DataLoader."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for i in range(num_images):
            folder = Path(tmp) / f"class{i % 2}"
            folder.mkdir(exist_ok=True)
            pixels = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
        samples, classes = scan_image_folder(tmp)
        cfg = ClassificationConfig().data
        cfg.image_size = image_size
        dataset = ImageListDataset(samples, classes, build_train_transform(cfg))
        loader = DataLoader(dataset, batch_size=16, num_workers=num_workers, shuffle=True)
        next(iter(loader))  # start-up (worker spawn) is not throughput
        start = time.perf_counter()
        count = sum(len(labels) for _, labels in loader)
        return count / (time.perf_counter() - start)


def resnet50_flops(image_size: int, num_classes: int) -> int:
    """Forward FLOPs of one image through the classifier the rows train (torchvision's resnet50)."""
    return forward_flops(
        torchvision.models.resnet50(num_classes=num_classes), torch.zeros(1, 3, image_size, image_size)
    )


def run(quick: bool = False) -> list[dict]:
    """The classification rows: engine default vs fp32 loop, forced bf16 (full runs), data loader."""
    batch_size, image_size, num_classes = 16, 224, 1000
    warmup, measured = (1, 2) if quick else (2, 6)
    data = make_batches(batch_size, warmup + measured, image_size, num_classes)
    anchor = anchor_images_per_s(data, batch_size, warmup, num_classes)
    ours, amp = engine_images_per_s(data, batch_size, warmup, num_classes)
    name = f"resnet50 train b16 224px: engine default (channels_last, amp={amp}) vs fp32 loop"
    dtype = torch.bfloat16 if amp == "torch.bfloat16" else torch.float32
    util = utilisation(ours, TRAIN_FLOPS_FACTOR * resnet50_flops(image_size, num_classes), dtype)
    target = bf16_target(2.0, fp32_target=1.0)
    rows = [row(name, ours, anchor, "images/s", ours / anchor, target, util=util)]
    name = "  the same, against the fp32 loop given bf16 autocast + channels-last"
    if amp == "torch.bfloat16":
        same = anchor_images_per_s(data, batch_size, warmup, num_classes, same_tricks=True)
        rows.append(row(name, ours, same, "images/s", ours / same, 1.3))
    else:
        rows.append(untimed_bf16_row(name, "images/s"))
    if not quick and not cpu_has_native_bf16() and measure_bf16():
        bf16, _ = engine_images_per_s(data, batch_size, warmup, num_classes, amp="bf16")
        name = "resnet50 train b16 224px: engine amp=bf16 forced (no native bf16 on this CPU)"
        rows.append(row(name, bf16, anchor, "images/s", bf16 / anchor, None))
    loader = loader_images_per_s(48 if quick else 96, image_size)
    name = "data loader: JPEG 500x375 -> train transforms 224px, 2 workers"
    rows.append(row(name, loader, ours, "images/s (anchor = training images/s)", loader / ours, 1.0))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.classification``: print the machine line and the classification table."""
    parser = area_parser("classification", __doc__, "fewer steps (smoke run)")
    args = parser.parse_args(argv)
    show("cls", run(quick=args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
