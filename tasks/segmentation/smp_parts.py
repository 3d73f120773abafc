"""Everything we take from segmentation-models-pytorch (pinned to 0.6.x), in one module.

* :class:`BackboneEncoder` adapts our ``backbones.ResNet`` to smp's encoder protocol (``out_channels``,
  ``output_stride``, ``forward -> [x, level0, level1, ...]``), with the widths read from
  ``backbone.feature_info``.
* :func:`register_encoder` adds it to smp's encoder table, so ``smp.Unet / FPN / DeepLabV3Plus`` can be
  built on our backbone by name.  smp 0.6 resolves encoder names through the module-level dict
  ``segmentation_models_pytorch.encoders.encoders`` (``get_encoder`` calls ``entry["encoder"](**params)``,
  then ``set_in_channels`` and ``make_dilated``); adding an entry is the extension point its own encoders
  use, and needs no monkey-patching of functions.
* The U-Net decoder, segmentation head and losses are smp's; only the decoder loop is repeated in
  :func:`decoder_features` because smp's ``UnetDecoder.forward`` returns the last level only and deep
  supervision needs the coarser ones (a test checks it equals ``UnetDecoder.forward``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import SegmentationHead, initialization
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.encoders import encoders as _SMP_ENCODERS
from segmentation_models_pytorch.encoders._base import EncoderMixin
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from segmentation_models_pytorch.losses import (
    DiceLoss,
    FocalLoss,
    SoftBCEWithLogitsLoss,
    SoftCrossEntropyLoss,
)
from torch import nn

from backbones import ResNet, create_backbone
from tasks.engine.config import ConfigError

__all__ = [
    "BackboneEncoder",
    "SegmentationHead",
    "UnetDecoder",
    "build_decoder",
    "build_loss",
    "decoder_features",
    "initialize_smp_style",
    "register_encoder",
    "smp_unet",
    "SMP_VERSION",
]

SMP_VERSION = smp.__version__
DECODER_NORMS = ("batchnorm", "instancenorm", "groupnorm", "identity")
LOSSES = ("dice_ce", "dice_focal", "ce", "focal", "dice")
MODES = ("binary", "multiclass", "multilabel")


class BackboneEncoder(nn.Module, EncoderMixin):
    """Our ResNet as an smp encoder: returns ``[x, stem, layer1, ..., layer{depth-1}]``.

    Args:
        backbone: a ``backbones.ResNet`` whose ``out_indices`` are ``(0, 1, ..., depth - 1)`` (the stem,
            level 0, is the U-Net's stride-2 skip connection).
    """

    def __init__(self, backbone: ResNet) -> None:
        nn.Module.__init__(self)
        EncoderMixin.__init__(self)
        depth = len(backbone.out_indices)
        if tuple(backbone.out_indices) != tuple(range(depth)):
            raise ValueError(
                f"the encoder needs consecutive levels from the stem, out_indices=(0, ..., k); "
                f"got {backbone.out_indices}"
            )
        self.backbone = backbone
        self._depth = depth
        self._in_channels = backbone.in_chans
        self._out_channels = [backbone.in_chans, *backbone.feature_info.channels]
        self._output_stride = backbone.feature_info.strides[-1]

    @property
    def output_stride(self) -> int:
        """Stride of the coarsest returned level (from feature_info; dilation included)."""
        return self._output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, *self.backbone(x).values()]

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """smp hook: adapt the first conv to ``in_channels`` (pretrained weights are summed / repeated)."""
        if in_channels == self._in_channels:
            return
        # smp passes pretrained = (encoder_weights is not None); ours come through the backbone instead.
        patch_first_conv(
            self.backbone,
            in_channels,
            default_in_channels=self._in_channels,
            pretrained=pretrained or self.backbone.pretrained_loaded,
        )
        self.backbone.in_chans = in_channels
        self._in_channels = in_channels
        self._out_channels[0] = in_channels

    def make_dilated(self, output_stride: int) -> None:
        """smp hook: the dilation is set when the backbone is built (``output_stride=``); only check it."""
        if output_stride != self._output_stride:
            raise ValueError(
                f"this encoder was built with output_stride={self._output_stride}; build the "
                f"backbone with output_stride={output_stride} instead"
            )

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self.backbone.layer3], 32: [self.backbone.layer4]}


def register_encoder(name: str, arch: str, weights: str | None = None, **backbone_kwargs) -> str:
    """Register our backbone under ``name`` in smp's encoder table.

    After ``register_encoder("ours-resnet34", "resnet34")``, ``smp.Unet("ours-resnet34",
    encoder_weights=None, in_channels=1, classes=2)`` (or ``smp.FPN``, ``smp.DeepLabV3Plus``) builds with our
    ResNet as encoder.  Pretrained weights go through ``weights=`` here (torchvision/timm name, path, URL);
    smp's ``encoder_weights`` must stay None because smp would look them up in its own hub.

    Args:
        name: encoder name to use in smp model constructors.
        arch: a ``backbones.create_backbone`` architecture.
        weights: backbone weights source.
        **backbone_kwargs: more ``ResNet`` arguments (frozen_stages, norm_eval, stem_type, norm_layer, ...).

    Returns:
        ``name``.
    """
    if name in _SMP_ENCODERS and _SMP_ENCODERS[name]["encoder"] is not _build_registered:
        raise ValueError(f"{name!r} is one of smp's own encoders; choose another name (e.g. 'ours-{arch}')")
    _SMP_ENCODERS[name] = {
        "encoder": _build_registered,
        "params": {"arch": arch, "weights": weights, "backbone_kwargs": dict(backbone_kwargs)},
        "pretrained_settings": {},
    }
    return name


def _build_registered(
    arch: str, weights: str | None, backbone_kwargs: dict, depth: int = 5, output_stride: int = 32
) -> BackboneEncoder:
    # Called by smp.encoders.get_encoder(**params, depth=..., output_stride=...).
    backbone = create_backbone(
        arch, weights=weights, out_indices=tuple(range(depth)), output_stride=output_stride, **backbone_kwargs
    )
    return BackboneEncoder(backbone)


def smp_unet(encoder_name: str = "resnet34", in_channels: int = 3, classes: int = 1, **kwargs) -> nn.Module:
    """smp's own ``Unet`` with random encoder weights: the anchor of tests and benchmarks."""
    return smp.Unet(encoder_name, encoder_weights=None, in_channels=in_channels, classes=classes, **kwargs)


# ------------------------------------------------------------------------------------------- decoder


def build_decoder(
    encoder_channels: Sequence[int],
    decoder_channels: Sequence[int],
    norm: str = "batchnorm",
    norm_groups: int = 8,
    attention: str | None = None,
) -> UnetDecoder:
    """smp's U-Net decoder with a choice of normalisation.

    smp 0.6 offers batchnorm / instancenorm / identity (and a channels-last LayerNorm) but no GroupNorm;
    for ``norm="groupnorm"`` the decoder is built with BatchNorm and each BatchNorm2d replaced by a
    GroupNorm of the same width (the conv layers keep ``bias=False``, which is right for any norm).
    InstanceNorm is made affine (smp's default is not), as nnU-Net uses it.
    """
    if norm not in DECODER_NORMS:
        raise ConfigError(f"model.decoder_norm must be one of {DECODER_NORMS}, got {norm!r}")
    if attention not in (None, "scse"):
        raise ConfigError(f"model.decoder_attention must be null or 'scse', got {attention!r}")
    if attention == "scse" and min(decoder_channels) < 16:
        # smp's SCSEModule squeezes channels by 16: narrower blocks would get a zero-width conv.
        raise ValueError(
            f"decoder_attention='scse' needs decoder_channels >= 16, got {list(decoder_channels)}"
        )
    use_norm: str | dict = {
        "batchnorm": "batchnorm",
        "groupnorm": "batchnorm",
        "identity": "identity",
        "instancenorm": {"type": "instancenorm", "affine": True},
    }[norm]
    decoder = UnetDecoder(
        encoder_channels=list(encoder_channels),
        decoder_channels=list(decoder_channels),
        n_blocks=len(decoder_channels),
        use_norm=use_norm,
        attention_type=attention,
    )
    if norm == "groupnorm":
        _replace_batchnorm(decoder, lambda c: nn.GroupNorm(_groups(c, norm_groups), c))
    return decoder


def _groups(channels: int, wanted: int) -> int:
    groups = min(wanted, channels)
    while channels % groups:
        groups -= 1
    return groups


def _replace_batchnorm(module: nn.Module, factory: Callable[[int], nn.Module]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, factory(child.num_features))
        else:
            _replace_batchnorm(child, factory)


def decoder_features(decoder: UnetDecoder, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run smp's UnetDecoder and return the output of every block (coarse to fine; the last is the usual one).

    Mirrors ``UnetDecoder.forward`` of smp 0.6 line by line.
    """
    spatial_shapes = [feature.shape[2:] for feature in features][::-1]
    features = features[1:][::-1]
    skips = features[1:]
    x = decoder.center(features[0])
    outputs = []
    for i, block in enumerate(decoder.blocks):
        height, width = spatial_shapes[i + 1]
        x = block(x, height, width, skip_connection=skips[i] if i < len(skips) else None)
        outputs.append(x)
    return outputs


def initialize_smp_style(decoder: nn.Module, heads: Sequence[nn.Module]) -> None:
    """smp's own initialisation: Kaiming-uniform convs and unit BatchNorm in the decoder, Xavier heads."""
    initialization.initialize_decoder(decoder)
    for head in heads:
        initialization.initialize_head(head)


# -------------------------------------------------------------------------------------------- losses


def build_loss(
    mode: str,
    name: str = "dice_ce",
    ignore_index: int = 255,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    focal_gamma: float = 2.0,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """smp losses combined: ``dice_weight * Dice + ce_weight * (CE | BCE | focal)``.

    Args:
        mode: "binary" (logits (N,1,H,W), target (N,1,H,W) float), "multiclass" (logits (N,C,H,W), target
            (N,H,W) long) or "multilabel" (logits and float target (N,R,H,W)).
        name: dice_ce (Dice + cross-entropy, BCE in binary/multilabel mode), dice_focal, ce, focal, dice.
        ignore_index: target value left out of every term.
        dice_weight, ce_weight: weights of the two terms.
        focal_gamma: focal loss gamma.
    """
    if mode not in MODES:
        raise ConfigError(f"model.mode must be one of {MODES}, got {mode!r}")
    if name not in LOSSES:
        raise ConfigError(f"loss.name must be one of {LOSSES}, got {name!r}")
    terms: list[tuple[float, nn.Module]] = []
    if name.startswith("dice"):
        terms.append((dice_weight, DiceLoss(mode, from_logits=True, ignore_index=ignore_index)))
    if name in ("dice_ce", "ce"):
        # smp 0.6's SoftCrossEntropyLoss fails with its default smooth_factor=None: pass 0.0 explicitly.
        ce: nn.Module = (
            SoftCrossEntropyLoss(smooth_factor=0.0, ignore_index=ignore_index)
            if mode == "multiclass"
            else SoftBCEWithLogitsLoss(ignore_index=ignore_index)
        )
        terms.append((ce_weight, ce))
    if name in ("dice_focal", "focal"):
        terms.append((ce_weight, FocalLoss(mode, gamma=focal_gamma, ignore_index=ignore_index)))

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(weight * term(logits, target) for weight, term in terms)

    return loss
