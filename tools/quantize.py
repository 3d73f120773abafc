"""INT8 post-training quantization of a trained classifier, with speed-up and top-1 agreement.

python tools/quantize.py runs/cls/checkpoints/best.pt --calib-images 64 --out exported/cls_int8
python tools/quantize.py CKPT data.root=/moved/data --val-images 200

Static INT8 (FX graph mode, x86 qconfig; see tasks/deploy/quantize.py for why not PT2E) is calibrated on
--calib-images images of the run's training set (eval transforms) and compared with the fp32 model on the
validation set; dynamic INT8 of the linear head is reported next to it. Writes model_int8.ts (TorchScript).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from benchmarks.timing import time_rounds
from tasks.deploy.inputs import real_images
from tasks.deploy.loading import load_classifier
from tasks.deploy.quantize import model_bytes, quantize_dynamic_head, quantize_static, top1_agreement
from tasks.engine.cli import exits_on_user_error


def _batches(images: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    return [torch.stack(images[i : i + size]) for i in range(0, len(images), size)]


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="checkpoint of tools/train_cls.py (EMA weights when it has them)")
    parser.add_argument(
        "overrides", nargs="*", help="data.* overrides of the saved config, e.g. data.root=DIR"
    )
    parser.add_argument("--calib-images", type=int, default=64, help="training images for calibration")
    parser.add_argument("--val-images", type=int, default=200, help="validation images for agreement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (medians)")
    parser.add_argument("--out", default="exported", help="folder for model_int8.ts")
    args = parser.parse_args(argv)
    trained = load_classifier(args.checkpoint, args.overrides, "INT8 quantization")
    calibration = _batches(real_images(trained.task, args.calib_images, "train"), args.batch_size)
    val = _batches(real_images(trained.task, args.val_images, "val"), args.batch_size)
    fp32 = trained.model
    int8 = quantize_static(fp32, calibration)
    val_cl = [b.contiguous(memory_format=torch.channels_last) for b in val]  # quantized convs run NHWC
    dynamic = quantize_dynamic_head(fp32)
    agree_int8, count = top1_agreement(
        fp32, lambda x: int8(x.contiguous(memory_format=torch.channels_last)), val
    )
    agree_dyn, _ = top1_agreement(fp32, dynamic, val)
    batch, batch_cl = val[0], val_cl[0]
    calls = {"fp32": lambda: fp32(batch), "int8": lambda: int8(batch_cl), "dynamic": lambda: dynamic(batch)}
    with torch.inference_mode():
        times = time_rounds(calls, args.repeats)
    t_fp32, t_int8, t_dyn = (times.median(name) for name in calls)
    print(f"calibrated on {sum(len(b) for b in calibration)} training images; {count} validation images")
    print(f"{'model':<22}{'ms/batch':>10}{'speed-up':>10}{'top-1 agree':>13}{'MB':>8}")
    for name, seconds, agree, module in (
        ("fp32", t_fp32, 1.0, fp32),
        ("int8 static (FX x86)", t_int8, agree_int8, int8),
        ("int8 dynamic head", t_dyn, agree_dyn, dynamic),
    ):
        mb = model_bytes(module) / 2**20
        print(f"{name:<22}{seconds * 1e3:>10.1f}{t_fp32 / seconds:>9.2f}x{agree * 100:>12.1f}%{mb:>8.1f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(int8, (batch_cl,)).save(str(out / "model_int8.ts"))
    print(f"wrote {out / 'model_int8.ts'} (input: NCHW float, channels-last memory is fastest)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
