"""The plain script a competent user writes: smp's U-Net, Dice + BCE on random 256 crops, for a CPU budget.

    python experiments/plain_seg_membrane.py --root ../shared/data/membrane/train --cpu-minutes 20

Trains segmentation_models_pytorch.Unet("resnet34", random init, 1 input channel) on the training slices
and reports per-slice Dice of cell interior (255) and membrane (0) on the held-out slices at 512x512. The
held-out slices are the toolkit's (`data.val_fraction`/`data.split_seed`, chosen by tasks' split_cases
on the file names), so both sides are scored on the same images. Kept next to the toolkit's recipe so
that the comparison in docs/results.md can be rerun.
"""

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image

from tasks.segmentation.data import split_cases  # the held-out slices only, not the recipe

p = argparse.ArgumentParser()
p.add_argument("--root", type=Path, default=Path("../shared/data/membrane/train"))
p.add_argument("--cpu-minutes", type=float, default=20.0)
p.add_argument("--val-fraction", type=float, default=0.25)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
torch.manual_seed(0)
stems = sorted(f.stem for f in (args.root / "image").glob("*.png"))
held_out = split_cases(stems, args.val_fraction, args.seed)


def load(stem):
    image = np.asarray(Image.open(args.root / "image" / f"{stem}.png").convert("L"), np.float32)
    label = np.asarray(Image.open(args.root / "label" / f"{stem}.png").convert("L")) > 127
    return torch.from_numpy((image - image.mean()) / (image.std() + 1e-6))[None], torch.from_numpy(label)[
        None
    ]


train = [load(s) for s in stems if s not in held_out]
val = {s: load(s) for s in sorted(held_out)}
model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1).to(
    memory_format=torch.channels_last
)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
dice_loss = smp.losses.DiceLoss("binary")
bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()


def batch(size=4, crop=256):
    xs, ys = [], []
    for i in torch.randint(len(train), (size,)).tolist():
        x, y = train[i]
        r, c = torch.randint(x.shape[1] - crop + 1, (2,)).tolist()
        x, y = x[:, r : r + crop, c : c + crop], y[:, r : r + crop, c : c + crop]
        k = int(torch.randint(4, ()))
        flip = bool(torch.rand(()) < 0.5)
        x, y = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (1, 2))
        xs.append(x.flip(2) if flip else x)
        ys.append(y.flip(2) if flip else y)
    return torch.stack(xs).contiguous(memory_format=torch.channels_last), torch.stack(ys).float()


start, step, budget = time.process_time(), 0, 60 * args.cpu_minutes
model.train()
while time.process_time() - start < budget:
    x, y = batch()
    for group in opt.param_groups:  # cosine over the CPU budget
        group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.process_time() - start) / budget)))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x).float()
    loss = dice_loss(logits, y) + torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    step += 1
    if step % 50 == 0:
        print(f"step {step} loss {loss.item():.3f} cpu {time.process_time() - start:.0f} s", flush=True)
model.eval()
interior, membrane = [], []
with torch.no_grad():
    for x, y in val.values():
        pred = model(x[None].contiguous(memory_format=torch.channels_last))[0] > 0
        for dice, p_, t in ((interior, pred, y), (membrane, ~pred, ~y)):
            dice.append(float(2 * (p_ & t).sum() / (p_.sum() + t.sum())))
for name, d in (("cell interior", interior), ("membrane", membrane)):
    ci = 1.96 * statistics.stdev(d) / math.sqrt(len(d))
    print(f"plain {name}: Dice {statistics.mean(d):.4f} +- {ci:.4f} over {len(d)} held-out slices")
    print("  per slice: " + ", ".join(f"{stem} {dice:.4f}" for stem, dice in zip(val, d)))
print(f"{step} steps, train CPU {time.process_time() - start:.0f} s, held out {sorted(held_out)}")
