"""Export to TorchScript and ONNX, each followed by a parity check against the PyTorch model.

What is exported and how its outputs are compared comes from the task's recipe (`Task.export_recipe()`,
see tasks/deploy/recipes.py); this module writes the files, loads them back and compares.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from tasks.engine.loading import TrainedModel

from .errors import DeployError
from .loading import require_exportable
from .recipes import ExportPlan, ImageBatchExport, as_tuple

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx"}


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
                dynamic_shapes=(dims,) if dims else None,  # by position: forward's argument name varies
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


def export_trained(
    trained: TrainedModel,
    images: list[torch.Tensor],
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    name: str = "model",
    atol: float = 1e-4,
    rtol: float = 1e-3,
    input_size: Sequence[int] | None = None,
) -> list[ParityResult]:
    """Export a checkpoint's model in each format and check parity on `images` (real images).

    Args:
        trained: from `load_trained_model`; its task's `export_recipe()` says what is traced and compared.
        images: (C, H, W) parity inputs, fitted by the recipe (a detector resizes them to one size).
        out_dir: folder for `<name>.ts`, `<name>.onnx` and `<name>.json` (shapes, tolerances, results).
        formats: subset of ("torchscript", "onnx").
        name: file stem.
        atol, rtol: parity tolerance `|diff| <= atol + rtol * |ref|`.
        input_size: (H, W) the images are resized to (the detector's export size); None keeps them.

    The checkpoint's task_meta (class names, ...) goes into the JSON, the TorchScript file (extra file
    `task_meta.json`) and the ONNX metadata (key `task_meta`), so an exported model is never separated
    from its labels.

    Returns:
        One ParityResult per format and parity case.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise DeployError(f"formats {bad}: expected some of {list(FORMATS)}")
    require_exportable(trained)
    if not images:
        raise DeployError("export needs at least one input image for the parity check")
    recipe = trained.task.export_recipe()
    model = trained.model.eval()
    plan = recipe.plan(model, recipe.fit_inputs(images, input_size))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_json = json.dumps(trained.meta)
    with torch.no_grad():
        references = {label: recipe.reference(model, x) for label, x in plan.cases}
    results: list[ParityResult] = []
    for fmt in formats:
        runner = _write(fmt, recipe, plan, out_dir / f"{name}{SUFFIXES[fmt]}", meta_json)
        for label, x in plan.cases:
            with torch.no_grad():
                outputs = as_tuple(runner(x))
            result = compare(f"{fmt} {label}", references[label], outputs, atol, rtol)
            result.note = result.note or recipe.note(references[label])
            results.append(result)
    record = {
        "task": trained.task.name,
        "formats": list(formats),
        "task_meta": trained.meta,
        "input_shape": plan.input_shape,
        "parity": [asdict(r) for r in results],
    }
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2))
    return results


def _write(fmt: str, recipe: ImageBatchExport, plan: ExportPlan, path: Path, meta_json: str):
    """Write `plan.module` in format `fmt` to `path` and return a runner of the written file."""
    if fmt == "torchscript":
        warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated.*")
        recipe.torchscript(plan).save(str(path), _extra_files={"task_meta.json": meta_json})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the C++ route
            return torch.jit.load(str(path))
    export_onnx(
        plan.module, plan.example, path, recipe.dynamic_axes, recipe.output_names, dynamo=recipe.onnx_dynamo
    )
    add_onnx_metadata(path, {"task_meta": meta_json})
    return OnnxModel(path)
