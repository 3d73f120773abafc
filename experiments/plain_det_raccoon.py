"""The plain script a competent user writes: torchvision Faster R-CNN, ResNet-18 FPN from scratch.

    python experiments/plain_det_raccoon.py --protocol runs/raccoon_protocol --cpu-minutes 12

Trains torchvision's FasterRCNN on resnet_fpn_backbone("resnet18", weights=None) with torchvision's
defaults except a CPU-sized resize (--min-size/--max-size): horizontal flips, SGD with warm-up and a cosine
schedule over a CPU budget (--cpu-minutes, as the membrane script does) on <protocol>/train.json. Then it
scores the final model on <protocol>/test.json (experiments/raccoon_protocol.py: COCO AP/AP50 with the same
bootstrap intervals). Kept next to the toolkit's recipe so that the comparison in
docs/results.md can be rerun.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raccoon_protocol import CocoEvaluator, bootstrap  # noqa: E402  (the protocol's scoring only)

p = argparse.ArgumentParser()
p.add_argument("--protocol", type=Path, default=Path("runs/raccoon_protocol"))
p.add_argument("--root", type=Path, default=Path("../shared/data/raccoon/train"))
p.add_argument("--cpu-minutes", type=float, default=12.0)
p.add_argument("--min-size", type=int, default=256)
p.add_argument("--max-size", type=int, default=384)
args = p.parse_args()
torch.manual_seed(0)


def load(part):
    coco = json.loads((args.protocol / f"{part}.json").read_text())
    boxes = {img["id"]: [] for img in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        boxes[a["image_id"]].append([x, y, x + w, y + h])
    images = [F.to_dtype(F.to_image(Image.open(args.root / "images" / i["file_name"]).convert("RGB")),
                         torch.float32, scale=True) for i in coco["images"]]  # fmt: skip
    return (
        coco,
        images,
        [torch.tensor(boxes[i["id"]], dtype=torch.float32).reshape(-1, 4) for i in coco["images"]],
    )


_, train_images, train_boxes = load("train")
backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
model = FasterRCNN(backbone, num_classes=2, min_size=args.min_size, max_size=args.max_size)
params = [q for q in model.parameters() if q.requires_grad]
opt = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
start, step, budget = time.process_time(), 0, 60 * args.cpu_minutes
while time.process_time() - start < budget:  # epochs until the CPU budget is spent
    model.train()
    order = torch.randperm(len(train_images)).tolist()
    for b in range(len(train_images) // 4):
        done = (time.process_time() - start) / budget
        for group in opt.param_groups:  # 100 warm-up steps, then cosine over the budget
            group["lr"] = 0.02 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        images, targets = [], []
        for i in order[4 * b : 4 * b + 4]:
            image, box = train_images[i], train_boxes[i].clone()
            if torch.rand(()) < 0.5:
                image, box[:, [0, 2]] = image.flip(-1), image.shape[-1] - box[:, [2, 0]]
            images.append(image)
            targets.append({"boxes": box, "labels": torch.ones(len(box), dtype=torch.int64)})
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    print(f"step {step} loss {loss.item():.3f} cpu {time.process_time() - start:.0f} s", flush=True)
cpu = time.process_time() - start
model.eval()
gt, test_images, _ = load("test")
results = []
with torch.no_grad():
    for info, image in zip(gt["images"], test_images):
        out = model([image])[0]
        for box, score in zip(out["boxes"].tolist(), out["scores"].tolist()):
            x1, y1, x2, y2 = box
            bbox = [x1, y1, x2 - x1, y2 - y1]
            results.append({"image_id": info["id"], "category_id": 1, "bbox": bbox, "score": score})
metrics, _ = CocoEvaluator(gt).evaluate(results)
ci = bootstrap(gt, results, 200)
print(
    f"plain: AP {metrics['AP']:.3f} [{ci['AP'][0]:.3f}, {ci['AP'][1]:.3f}], AP50 {metrics['AP50']:.3f} "
    f"[{ci['AP50'][0]:.3f}, {ci['AP50'][1]:.3f}] on {len(test_images)} test images, training CPU {cpu:.0f} s"
)
