"""The plain script a competent user writes: torchvision resnet18 from scratch, the tutorial's transforms.

    python experiments/plain_cls_hymenoptera.py --protocol runs/hymenoptera_protocol --epochs 30

Trains torchvision.models.resnet18(num_classes=2) on <protocol>/train (ImageFolder) with the PyTorch
transfer-learning tutorial's augmentation (RandomResizedCrop + horizontal flip) at --size px, AdamW and a
cosine schedule, bf16 autocast and channels-last where the CPU has them, then scores the final model on
<protocol>/test (experiments/hymenoptera_protocol.py) with the same Wilson interval. Kept next to the
toolkit's recipe so that the comparison in docs/results.md can be rerun.
"""

import argparse
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hymenoptera_protocol import wilson_interval  # noqa: E402  (the protocol's interval, not its recipe)

from tasks.engine.runtime import cpu_seconds  # noqa: E402  (the toolkit's clock, so both sides count alike)

p = argparse.ArgumentParser()
p.add_argument("--protocol", type=Path, default=Path("runs/hymenoptera_protocol"))
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--size", type=int, default=160)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
torch.manual_seed(args.seed)
norm = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), norm]
train_tf = v2.Compose([v2.RandomResizedCrop(args.size), v2.RandomHorizontalFlip(), *to_tensor])
test_tf = v2.Compose([v2.Resize(int(args.size / 0.875)), v2.CenterCrop(args.size), *to_tensor])
train_set = torchvision.datasets.ImageFolder(args.protocol / "train", train_tf)
test_set = torchvision.datasets.ImageFolder(args.protocol / "test", test_tf)
loader = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, num_workers=2, drop_last=True)
model = torchvision.models.resnet18(num_classes=len(train_set.classes)).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * len(loader))
bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


start = cpu_seconds()
for epoch in range(args.epochs):
    model.train()
    for x, y in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x.to(memory_format=torch.channels_last)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    print(f"epoch {epoch + 1} loss {loss.item():.3f} cpu {cpu_seconds() - start:.0f} s", flush=True)
model.eval()
hits = 0
with torch.no_grad():
    for x, y in torch.utils.data.DataLoader(test_set, batch_size=32):
        hits += int((model(x.to(memory_format=torch.channels_last)).argmax(1) == y).sum())
low, high = wilson_interval(hits, len(test_set))
print(
    f"plain: accuracy {100 * hits / len(test_set):.1f}% [{100 * low:.1f}, {100 * high:.1f}] on "
    f"{len(test_set)} test images, training CPU {cpu_seconds() - start:.0f} s (with the loader workers)"
)
