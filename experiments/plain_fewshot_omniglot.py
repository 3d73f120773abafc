"""The plain script a competent user writes: torchvision resnet18, small-image stem, rotations as classes.

    python experiments/plain_fewshot_omniglot.py --split runs/omniglot_protocol/split.json --epochs 6

Trains on the base characters of split.json (each rotated by 0/90/180/270 degrees as its own class) at
28 px under bf16 autocast when the CPU has it, then scores every runNN/ folder of the protocol
(experiments/omniglot_protocol.py) by nearest prototype of L2-normalised features. Kept next to the
toolkit's recipe so that the comparison in docs/results.md can be rerun.
"""

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import v2

p = argparse.ArgumentParser()
p.add_argument("--split", type=Path, required=True)
p.add_argument("--epochs", type=int, default=6)
p.add_argument("--size", type=int, default=28)
args = p.parse_args()
torch.manual_seed(0)
split = json.loads(args.split.read_text())
root = Path(split["meta"]["root"])
load = v2.Compose([v2.Grayscale(), v2.Resize(args.size), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def read(path):
    return load(Image.open(path).convert("L"))


images, labels = [], []
for c, name in enumerate(split["base"]):
    for f in sorted((root / name).glob("*.png")):
        x = read(f)
        for r in range(4):
            images.append(torch.rot90(x, r, (1, 2)))
            labels.append(4 * c + r)
x_all, y_all = torch.stack(images), torch.tensor(labels)
model = torchvision.models.resnet18(num_classes=4 * len(split["base"]))
model.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
model.maxpool = nn.Identity()
model = model.to(memory_format=torch.channels_last)
steps = args.epochs * math.ceil(len(x_all) / 64)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
augment = v2.RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1))
bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
start = time.process_time()
for epoch in range(args.epochs):
    model.train()
    for idx in torch.randperm(len(x_all)).split(64):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(augment(x_all[idx])), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    print(f"epoch {epoch + 1} loss {loss.item():.3f} cpu {time.process_time() - start:.0f} s", flush=True)
model.fc = nn.Identity()
model.eval()


@torch.no_grad()
def embed(paths):
    return nn.functional.normalize(model(torch.stack([read(q) for q in paths])), dim=1)


accuracies = []
for run in sorted(args.split.parent.glob("run*")):
    classes = sorted(d.name for d in (run / "support").iterdir())
    protos = torch.cat([embed(sorted((run / "support" / c).iterdir())) for c in classes])
    hits = total = 0
    for i, c in enumerate(classes):
        predicted = (embed(sorted((run / "query" / c).iterdir())) @ protos.T).argmax(1)
        hits, total = hits + int((predicted == i).sum()), total + len(predicted)
    accuracies.append(hits / total)
mean, ci = statistics.mean(accuracies), 1.96 * statistics.stdev(accuracies) / math.sqrt(len(accuracies))
cpu = time.process_time() - start
print(f"plain: {100 * mean:.2f} +- {100 * ci:.2f} % over {len(accuracies)} runs, CPU {cpu:.0f} s in all")
