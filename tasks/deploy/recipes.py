"""How each kind of model is exported: what is traced, with which inputs, and how outputs are compared.

A task names its recipe with `Task.export_recipe()`; `tasks.deploy.export` runs any recipe the same way
(TorchScript and ONNX files, then the parity check). Routes, chosen by what works for each model on
torch 2.14:
- `ImageBatchExport` (classifier, the default): Conv+BN folded, channels-last weights; `torch.jit.trace`;
  ONNX through the dynamo exporter (`torch.onnx.export(dynamo=True)`) with a dynamic batch axis.
- `UNetExport`: `PadToStride` around the stride-aligned core; TorchScript = scripted pad/crop around a
  traced core, ONNX = dynamo exporter with dynamic H and W. Any H x W works in both.
- `FasterRCNNExport`: one fixed input size. `torch.export` cannot handle the data-dependent NMS output
  (GuardOnDataDependentSymNode in torchvision.ops.batched_nms), so ONNX uses the TorchScript-based
  exporter (`dynamo=False`), which torchvision's own ONNX tests use; TorchScript = trace + scripted guard.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from backbones import prepare_for_inference

from .errors import DeployError
from .wrappers import DetectorFixedSize, FixedSizeGuard, PadToStride, UNetCore


@dataclass
class ExportPlan:
    """What one export writes and checks."""

    module: nn.Module  # the export-friendly view: one tensor in, a tensor or a tuple of tensors out
    cases: list[tuple[str, torch.Tensor]]  # (label, input batch) pairs of the parity check
    example: torch.Tensor  # the input the module is traced and exported with
    input_shape: list  # the input shape recorded in <name>.json (names for dynamic axes)


def trace(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """`torch.jit.trace` without the tracer's warnings (the parity check right after is the real test)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic
        return torch.jit.trace(module, (example,), check_trace=False)


def as_tuple(output) -> tuple[torch.Tensor, ...]:
    """A model output as a tuple of tensors (the form both runtimes return)."""
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def resize(images: Sequence[torch.Tensor], size: Sequence[int]) -> list[torch.Tensor]:
    """Images (C, H, W) resized bilinearly to `size` (H, W)."""
    return [F.interpolate(x[None], size=list(size), mode="bilinear", align_corners=False)[0] for x in images]


class ImageBatchExport:
    """A network from an image batch (N, C, H, W) of one size to one tensor, e.g. classifier logits."""

    output_names: tuple[str, ...] = ("logits",)
    dynamic_axes: dict[int, str] = {0: "batch"}
    onnx_dynamo = True  # torch.export-based ONNX exporter (False: the TorchScript-based one)

    def fit_inputs(self, images: list[torch.Tensor], size: Sequence[int] | None) -> list[torch.Tensor]:
        """The parity images: resized to `size` (H, W) when one is given, else as the dataset gave them."""
        return resize(images, size) if size else images

    def plan(self, model: nn.Module, inputs: list[torch.Tensor]) -> ExportPlan:
        """Conv+BN folded and channels-last weights (oneDNN's layout); all inputs in one batch."""
        sizes = {tuple(x.shape) for x in inputs}
        if len(sizes) != 1:
            raise DeployError(f"inputs of this model must share one size, got {sorted(sizes)}")
        batch = torch.stack(inputs)
        # torch.export specialises a dimension of size 1, so the example batch has at least two images.
        example = batch if len(batch) > 1 else batch.repeat(2, 1, 1, 1)
        return ExportPlan(
            prepare_for_inference(model, fuse=True, channels_last=True),
            [("batch", batch)],
            example.contiguous(memory_format=torch.channels_last),
            ["batch", *batch.shape[1:]],
        )

    def reference(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The trained model's outputs for one parity input (the unfused model, as trained)."""
        return as_tuple(model(x))

    def torchscript(self, plan: ExportPlan) -> torch.jit.ScriptModule:
        """The TorchScript module to save."""
        return trace(plan.module, plan.example)

    def note(self, reference: tuple[torch.Tensor, ...]) -> str:
        """What a parity line adds about one case (nothing by default)."""
        return ""


class UNetExport(ImageBatchExport):
    """The U-Net for any H x W: the pad to the network stride and the crop back happen inside the graph."""

    dynamic_axes = {0: "batch", 2: "height", 3: "width"}

    def plan(self, model: nn.Module, inputs: list[torch.Tensor]) -> ExportPlan:
        """Each image is checked at its size and at a cropped size that is not a multiple of the stride."""
        core = UNetCore(prepare_for_inference(model, fuse=True, channels_last=False))
        cases = []
        for i, x in enumerate(inputs):
            h, w = x.shape[-2:]
            cases.append((f"image{i} {h}x{w}", x[None]))
            # The cropped size exercises the in-graph padding.
            ch, cw = max(8, h - h // 4 - 3), max(8, w - w // 3 - 5)
            cases.append((f"image{i} crop {ch}x{cw}", x[None, :, :ch, :cw].contiguous()))
        example = cases[0][1].repeat(2, 1, 1, 1)  # batch 2: see ImageBatchExport.plan
        shape = ["batch", inputs[0].shape[0], "height", "width"]
        return ExportPlan(PadToStride(core, model.stride).eval(), cases, example, shape)

    def torchscript(self, plan: ExportPlan) -> torch.jit.ScriptModule:
        """A traced core at a stride-aligned size inside the scripted pad/crop (which stays dynamic)."""
        stride, example = plan.module.stride, plan.example
        padded = F.pad(example, (0, -example.shape[-1] % stride, 0, -example.shape[-2] % stride))
        return torch.jit.script(PadToStride(trace(plan.module.core, padded), stride))


class FasterRCNNExport(ImageBatchExport):
    """Faster R-CNN for one input size (1, 3, H, W) -> (boxes, scores, labels)."""

    output_names = ("boxes", "scores", "labels")
    dynamic_axes: dict[int, str] = {}
    onnx_dynamo = False  # torch.export fails on the data-dependent number of boxes after NMS

    def fit_inputs(self, images: list[torch.Tensor], size: Sequence[int] | None) -> list[torch.Tensor]:
        """Every image resized to the export size: `size`, else the first image's size."""
        return resize(images, size or images[0].shape[-2:]) if images else images

    def plan(self, model: nn.Module, inputs: list[torch.Tensor]) -> ExportPlan:
        """Conv+BN folded (frozen BN too); each image is one parity case."""
        height, width = (int(v) for v in inputs[0].shape[-2:])
        other = [tuple(x.shape[-2:]) for x in inputs if tuple(x.shape[-2:]) != (height, width)]
        if other:
            raise DeployError(f"detector inputs must all be {height}x{width} (the export size), got {other}")
        detector = prepare_for_inference(model, fuse=True, channels_last=False)
        cases = [(f"image{i}", x[None]) for i, x in enumerate(inputs)]
        module = DetectorFixedSize(detector, height, width).eval()
        return ExportPlan(module, cases, cases[0][1], [1, inputs[0].shape[0], height, width])

    def reference(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = model([x[0]])[0]
        return output["boxes"], output["scores"], output["labels"]

    def torchscript(self, plan: ExportPlan) -> torch.jit.ScriptModule:
        """The traced detector behind a scripted guard that refuses other input sizes by name."""
        module = plan.module
        return torch.jit.script(FixedSizeGuard(trace(module, plan.example), module.height, module.width))

    def note(self, reference: tuple[torch.Tensor, ...]) -> str:
        return f"({len(reference[0])} boxes compared)"
