"""Export to TorchScript and ONNX, each followed by a parity check against the PyTorch model.

Routes, chosen by what works for each model on torch 2.14:
- classifier: Conv+BN folded, channels-last weights; ``torch.jit.trace``; ONNX through the dynamo
  exporter (``torch.onnx.export(dynamo=True)``) with a dynamic batch axis.
- U-Net: :class:`PadToStride` around the stride-aligned core; TorchScript = scripted pad/crop around a
  traced core, ONNX = dynamo exporter with dynamic H and W. Any H x W works in both.
- Faster R-CNN: one fixed input size. ``torch.export`` cannot handle the data-dependent NMS output
  (GuardOnDataDependentSymNode in torchvision.ops.batched_nms), so ONNX uses the TorchScript-based
  exporter (``dynamo=False``), which torchvision's own ONNX tests use; TorchScript = trace + scripted guard.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from backbones import prepare_for_inference

from .errors import DeployError
from .wrappers import DetectorFixedSize, FixedSizeGuard, PadToStride, UNetCore

FORMATS = ("torchscript", "onnx")


@dataclass
class ParityResult:
    """Largest deviation of the exported model from PyTorch on the given inputs, and the verdict."""

    name: str
    max_abs_diff: float
    atol: float
    rtol: float
    passed: bool
    note: str = ""

    def line(self) -> str:
        verdict = "OK" if self.passed else "FAILED"
        return (
            f"parity {self.name}: max |diff| = {self.max_abs_diff:.3g} "
            f"(tolerance atol={self.atol:g} + rtol={self.rtol:g}*|ref|) {verdict} {self.note}"
        ).rstrip()


def compare(
    name: str,
    reference: Sequence[torch.Tensor],
    exported: Sequence[torch.Tensor],
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ParityResult:
    """Elementwise check ``|exported - reference| <= atol + rtol * |reference|`` over all outputs."""
    worst, passed, note = 0.0, True, ""
    for index, (ref, out) in enumerate(zip(reference, exported, strict=True)):
        out = torch.as_tensor(out)
        if ref.shape != out.shape:
            return ParityResult(
                name,
                float("inf"),
                atol,
                rtol,
                False,
                f"output {index}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}",
            )
        if ref.numel() == 0:
            continue
        diff = (out.double() - ref.double()).abs()
        worst = max(worst, float(diff.max()))
        passed &= bool((diff <= atol + rtol * ref.double().abs()).all())
    return ParityResult(name, worst, atol, rtol, passed, note)


class OnnxModel:
    """onnxruntime session that checks the input shape against the graph's fixed dimensions first."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        expected = self.input.shape
        fixed = [(i, d) for i, d in enumerate(expected) if isinstance(d, int)]
        if x.dim() != len(expected) or any(x.shape[i] != d for i, d in fixed):
            raise DeployError(
                f"{self.path} was exported for input shape {expected} (str = any size), got {list(x.shape)}"
            )
        outputs = self.session.run(None, {self.input.name: x.detach().cpu().numpy()})
        return [torch.from_numpy(o) for o in outputs]


def _as_tuple(output) -> tuple[torch.Tensor, ...]:
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    dynamic_axes: dict[int, str],
    output_names: Sequence[str],
    dynamo: bool = True,
) -> Path:
    """Write ``module`` as ONNX; ``dynamic_axes`` maps input dims to names (e.g. ``{2: "height"}``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer/exporter chatter; parity is checked right after
        if dynamo:
            dims = {
                i: torch.export.Dim(name, min=1 if i == 0 else 8, max=8192)
                for i, name in dynamic_axes.items()
            }
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                verbose=False,
                input_names=["input"],
                output_names=list(output_names),
                dynamic_shapes={"x": dims} if dims else None,
                report=False,
            )
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                output_names=list(output_names),
                dynamic_axes={"input": dynamic_axes} if dynamic_axes else None,
            )
    return path


def add_onnx_metadata(path: Path, entries: dict[str, str]) -> None:
    """Store string entries in the ONNX file's metadata_props (onnxruntime: `modelmeta.custom_metadata_map`).

    The weights of large models live in `<name>.onnx.data`: the graph is read without them and written
    back in place, so the external-data references stay valid.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for key, value in entries.items():
        entry = next((p for p in proto.metadata_props if p.key == key), None) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _trace(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic; parity is checked after
        return torch.jit.trace(module, (example,), check_trace=False)


def classifier_for_export(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Eval copy with Conv+BN folded (fewer ops, same numbers) and channels-last weights (oneDNN's layout)."""
    return prepare_for_inference(model, fuse=True, channels_last=channels_last)


def unet_for_export(model: nn.Module) -> PadToStride:
    """Folded U-Net core wrapped so any H x W works."""
    return PadToStride(
        UNetCore(prepare_for_inference(model, fuse=True, channels_last=False)), model.stride
    ).eval()


def detector_for_export(model: nn.Module, height: int, width: int) -> DetectorFixedSize:
    """Folded Faster R-CNN (frozen BN folds too) for one fixed (1, 3, height, width) input."""
    return DetectorFixedSize(
        prepare_for_inference(model, fuse=True, channels_last=False), height, width
    ).eval()


def export_task_model(
    task: str,
    model: nn.Module,
    inputs: list[torch.Tensor],
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    name: str = "model",
    atol: float = 1e-4,
    rtol: float = 1e-3,
    task_meta: dict | None = None,
) -> list[ParityResult]:
    """Export ``model`` of ``task`` in each format and check parity on ``inputs`` (real images).

    Args:
        task: classification | segmentation | detection.
        model: the trained model in eval mode (the parity reference: unfused, as trained).
        inputs: classification: images of one size, batched together; segmentation: images of any sizes,
            each also checked at a cropped odd size; detection: images all of the export size.
        out_dir: folder for ``<name>.ts``, ``<name>.onnx`` and ``<name>.json`` (shapes, tolerances, results).
        formats: subset of ("torchscript", "onnx").
        atol, rtol: parity tolerance ``|diff| <= atol + rtol * |ref|``.
        task_meta: what the outputs mean (the checkpoint's class names, ...): written into the JSON, the
            TorchScript file (extra file ``task_meta.json``) and the ONNX metadata (key ``task_meta``), so
            an exported model is never separated from its labels.

    Returns:
        One ParityResult per format (and per size for the U-Net).
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise DeployError(f"formats {bad}: expected some of {list(FORMATS)}")
    if not inputs:
        raise DeployError("export needs at least one input image for the parity check")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    results: list[ParityResult] = []
    meta: dict = {"task": task, "formats": list(formats), "task_meta": dict(task_meta or {})}
    meta_json = json.dumps(meta["task_meta"])

    if task == "classification":
        sizes = {tuple(x.shape) for x in inputs}
        if len(sizes) != 1:
            raise DeployError(f"classifier inputs must share one size, got {sorted(sizes)}")
        batch = torch.stack(inputs)
        wrapped = classifier_for_export(model)
        cases = [("batch", batch)]
        # torch.export specialises a dimension of size 1, so the example batch has at least two images.
        example = (batch if len(batch) > 1 else batch.repeat(2, 1, 1, 1)).contiguous(
            memory_format=torch.channels_last
        )
        dynamic, names = {0: "batch"}, ["logits"]
        meta["input_shape"] = ["batch", *batch.shape[1:]]
    elif task == "segmentation":
        wrapped = unet_for_export(model)
        cases = []
        for i, x in enumerate(inputs):
            h, w = x.shape[-2:]
            cases.append((f"image{i} {h}x{w}", x[None]))
            # A second, cropped size that is not a multiple of the stride exercises the in-graph padding.
            ch, cw = max(8, h - h // 4 - 3), max(8, w - w // 3 - 5)
            cases.append((f"image{i} crop {ch}x{cw}", x[None, :, :ch, :cw].contiguous()))
        example = cases[0][1].repeat(2, 1, 1, 1)  # batch 2: see the classifier case
        dynamic, names = {0: "batch", 2: "height", 3: "width"}, ["logits"]
        meta["input_shape"] = ["batch", inputs[0].shape[0], "height", "width"]
    elif task == "detection":
        height, width = inputs[0].shape[-2:]
        bad_sizes = [tuple(x.shape[-2:]) for x in inputs if tuple(x.shape[-2:]) != (height, width)]
        if bad_sizes:
            raise DeployError(
                f"detector inputs must all be {height}x{width} (the export size), got {bad_sizes}"
            )
        wrapped = detector_for_export(model, int(height), int(width))
        cases = [(f"image{i}", x[None]) for i, x in enumerate(inputs)]
        example, dynamic, names = cases[0][1], {}, ["boxes", "scores", "labels"]
        meta["input_shape"] = [1, inputs[0].shape[0], int(height), int(width)]
    else:
        raise DeployError(f"task={task!r}: export supports classification, segmentation, detection")

    with torch.no_grad():
        references = {label: _as_tuple(_reference(task, model, x)) for label, x in cases}
    for fmt in formats:
        if fmt == "torchscript":
            path = out_dir / f"{name}.ts"
            warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated.*")
            if task == "segmentation":
                traced_core = _trace(wrapped.core, F.pad(example, _stride_pad(example, wrapped.stride)))
                exported = torch.jit.script(PadToStride(traced_core, wrapped.stride))
            elif task == "detection":
                exported = torch.jit.script(
                    FixedSizeGuard(_trace(wrapped, example), wrapped.height, wrapped.width)
                )
            else:
                exported = _trace(wrapped, example)
            exported.save(str(path), _extra_files={"task_meta.json": meta_json})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the C++ route
                runner = torch.jit.load(str(path))
        else:
            path = export_onnx(
                wrapped, example, out_dir / f"{name}.onnx", dynamic, names, dynamo=task != "detection"
            )
            add_onnx_metadata(path, {"task_meta": meta_json})
            runner = OnnxModel(path)
        for label, x in cases:
            with torch.no_grad():
                outputs = _as_tuple(
                    runner(
                        x.contiguous(memory_format=torch.channels_last)
                        if task == "classification" and fmt == "torchscript"
                        else x
                    )
                )
            result = compare(f"{fmt} {label}", references[label], outputs, atol, rtol)
            if task == "detection" and not result.note:
                result.note = f"({len(references[label][0])} boxes compared)"
            results.append(result)
    meta["parity"] = [asdict(r) for r in results]
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2))
    return results


def _stride_pad(x: torch.Tensor, stride: int) -> tuple[int, int, int, int]:
    return (0, -x.shape[-1] % stride, 0, -x.shape[-2] % stride)


def _reference(task: str, model: nn.Module, x: torch.Tensor):
    if task == "detection":
        output = model([x[0]])[0]
        return output["boxes"], output["scores"], output["labels"]
    return model(x)
