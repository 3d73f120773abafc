"""Export-friendly views of the task models: plain tensor in, plain tensors out.

The training models take lists (detector) or crop with Python ints (U-Net); tracing or ONNX export of
those would freeze one input size into the graph. These wrappers make the size handling explicit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UNetCore(nn.Module):
    """U-Net encoder + decoder + head for inputs whose sides are multiples of the network stride."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        self.segmentation_head = unet.segmentation_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from tasks.segmentation.smp_parts import decoder_features

        return self.segmentation_head(decoder_features(self.decoder, self.encoder(x))[-1])


class PadToStride(nn.Module):
    """Zero-pad H and W up to a multiple of ``stride``, run ``core``, crop the logits back.

    The pad amounts are computed from the input's shape inside the graph (no Python branch), so the
    exported model accepts any H x W, as the training U-Net does.
    """

    def __init__(self, core: nn.Module, stride: int) -> None:
        super().__init__()
        self.core = core
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (self.stride - height % self.stride) % self.stride
        pad_w = (self.stride - width % self.stride) % self.stride
        logits = self.core(F.pad(x, (0, pad_w, 0, pad_h)))
        return logits[:, :, :height, :width]


class DetectorFixedSize(nn.Module):
    """Faster R-CNN on one image batch ``(1, 3, H, W)`` of a fixed size -> (boxes, scores, labels).

    Detection post-processing (top-k per level, NMS) is data dependent, so the graph is traced for one input
    size; other sizes are refused with a clear error instead of silently wrong anchors.
    """

    def __init__(self, detector: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.detector = detector
        self.height = height
        self.width = width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output = self.detector([x[0]])[0]
        return output["boxes"], output["scores"], output["labels"]


class FixedSizeGuard(nn.Module):
    """Scripted front of a traced detector: refuses other input shapes with a readable message."""

    def __init__(self, traced: torch.jit.ScriptModule, height: int, width: int) -> None:
        super().__init__()
        self.traced = traced
        self.height = height
        self.width = width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[2] != self.height or x.shape[3] != self.width:
            raise ValueError(
                "this detector was exported for input (1, 3, "
                + str(self.height)
                + ", "
                + str(self.width)
                + "), got "
                + str(list(x.shape))
                + "; resize the image or export again with --input-size"
            )
        return self.traced(x)
