"""INT8 post-training quantization of the classifier.

Static INT8 uses FX graph mode quantization with the ``x86`` qconfig (fbgemm + oneDNN kernels). Why not
PT2E: in torch 2.14 the PT2E flow and ``X86InductorQuantizer`` moved out of ``torch.ao`` into the separate
``torchao`` package, and its INT8 speed comes from ``torch.compile`` (Inductor) generating the fused
kernels; run eagerly, a PT2E model is a float model with quantize/dequantize pairs and is slower than
fp32. FX ``convert_fx`` instead produces real ``quantized::conv2d`` modules that run fast in eager mode,
with no compile step and no extra dependency. ``torch.ao.quantization`` prints a deprecation warning in
torch 2.14 but works; :func:`_quiet_ao` keeps the logs readable.

Dynamic quantization of the linear head (weights INT8, activations quantized on the fly) is the cheap
option: no calibration, but only the last layer changes, so it shrinks the head and little else.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from .errors import DeployError


@contextlib.contextmanager
def _quiet_ao():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*must run observer before calling calculate_qparams.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


class FlatClassifier(nn.Module):
    """The ImageClassifier's layers in one straight forward pass, which FX can trace.

    The backbone's forward checks input sizes and chooses no_grad per frozen level with Python branches on
    tensor properties; FX symbolic tracing cannot follow those, and inference needs neither.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        backbone = classifier.backbone
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu)
        self.maxpool = backbone.maxpool
        self.layer1, self.layer2 = backbone.layer1, backbone.layer2
        self.layer3, self.layer4 = backbone.layer3, backbone.layer4
        self.final_norm = backbone.final_norm
        self.head = classifier.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(self.final_norm(x))


def _flat(model: nn.Module) -> nn.Module:
    if hasattr(model, "backbone") and hasattr(model, "head"):
        return FlatClassifier(copy.deepcopy(model)).eval()
    return copy.deepcopy(model).eval()  # e.g. a torchvision ResNet, already FX-traceable


def quantize_static(
    model: nn.Module, calibration: Iterable[torch.Tensor] | None, backend: str = "x86"
) -> torch.fx.GraphModule:
    """INT8 static quantization (per-channel weights, per-tensor activations) calibrated on ``calibration``.

    Args:
        model: an ImageClassifier (or any FX-traceable classifier) in fp32.
        calibration: batches of training images (N, C, H, W), preprocessed as at inference.
        backend: "x86" (fbgemm + oneDNN, for x86 CPUs with AVX-512/VNNI) or "qnnpack" (ARM).

    Raises:
        DeployError: no calibration batches (observers would have no ranges: every activation scale
            would be arbitrary).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    batches = list(calibration) if calibration is not None else []
    if not batches:
        raise DeployError(
            "static INT8 quantization needs calibration images: pass training images "
            "(tools/quantize.py uses --calib-images N from the run's train set); none were given"
        )
    if backend not in torch.backends.quantized.supported_engines:
        raise DeployError(
            f"backend={backend!r}: this torch supports {torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = backend
    float_model = _flat(model)
    with _quiet_ao():
        prepared = prepare_fx(float_model, get_default_qconfig_mapping(backend), example_inputs=(batches[0],))
        with torch.inference_mode():
            for batch in batches:
                prepared(batch)
        return convert_fx(prepared)


def quantize_dynamic_head(model: nn.Module) -> nn.Module:
    """Copy of ``model`` with every ``nn.Linear`` (the classifier head) dynamically quantized to INT8."""
    with _quiet_ao():
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8
        )


@torch.inference_mode()
def top1_agreement(
    reference: nn.Module, candidate: nn.Module, batches: Iterable[torch.Tensor]
) -> tuple[float, int]:
    """Fraction of images on which both models predict the same class, and the number of images."""
    same = total = 0
    for batch in batches:
        same += int((reference(batch).argmax(1) == candidate(batch).argmax(1)).sum())
        total += len(batch)
    if total == 0:
        raise DeployError("top-1 agreement needs validation images; none were given")
    return same / total, total


def model_bytes(model: nn.Module) -> int:
    """Bytes of the serialized state dict (what a deployment ships)."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
