"""U-Net on our backbone: smp's decoder and head fed from ``backbone.feature_info``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from backbones import ResNet
from tasks.common.backbone import build_backbone
from tasks.engine.config import ConfigError

from .smp_parts import (
    MODES,
    BackboneEncoder,
    SegmentationHead,
    build_decoder,
    decoder_features,
    initialize_smp_style,
)


class UNet(nn.Module):
    """U-Net whose encoder is a ``backbones.ResNet`` (any depth, variant, ``in_chans``, ``frozen_stages``).

    Inputs of any size work: they are zero-padded to a multiple of the network stride (also when smaller
    than the stride) and the logits are cropped back, so the output always has the input's height and width.

    Args:
        backbone: the encoder; its ``out_indices`` must be ``(0, ..., depth - 1)`` (the stem is the stride-2
            skip connection).
        out_channels: logits channels (1 for binary, C for multi-class, R regions for multi-label).
        decoder_channels: widths of the decoder blocks, coarse to fine; one per encoder level.
        decoder_norm: batchnorm | instancenorm | groupnorm | identity (GN/IN for small batches).
        decoder_norm_groups: groups of GroupNorm.
        decoder_attention: None or "scse" (Roy et al. 2018).
        deep_supervision: number of auxiliary 1x1 heads on the coarser decoder blocks (0 = off); in training
            ``forward`` then returns ``(logits, [aux_logits, ...])`` (aux at their own resolution).
    """

    def __init__(
        self,
        backbone: ResNet,
        out_channels: int,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        decoder_norm: str = "batchnorm",
        decoder_norm_groups: int = 8,
        decoder_attention: str | None = None,
        deep_supervision: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = BackboneEncoder(backbone)
        if len(decoder_channels) != len(backbone.out_indices):
            raise ConfigError(
                f"model.decoder_channels has {len(decoder_channels)} entries but the encoder has "
                f"{len(backbone.out_indices)} levels (encoder_depth); give one width per level"
            )
        if not 0 <= deep_supervision < len(decoder_channels):
            raise ConfigError(
                f"model.deep_supervision must be in 0..{len(decoder_channels) - 1}, got {deep_supervision}"
            )
        self.decoder = build_decoder(
            self.encoder.out_channels, decoder_channels, decoder_norm, decoder_norm_groups, decoder_attention
        )
        self.segmentation_head = SegmentationHead(decoder_channels[-1], out_channels, kernel_size=3)
        # Aux heads on the blocks just coarser than the last one, finest first (nnU-Net's deep supervision).
        self.aux_heads = nn.ModuleList(
            nn.Conv2d(decoder_channels[-2 - k], out_channels, 1) for k in range(deep_supervision)
        )
        self.stride = self.encoder.output_stride
        initialize_smp_style(self.decoder, [self.segmentation_head, *self.aux_heads])

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.stride, -width % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        outputs = decoder_features(self.decoder, self.encoder(x))
        logits = self.segmentation_head(outputs[-1])[..., :height, :width]
        if not (self.training and self.aux_heads):
            return logits
        aux = []
        for k, head in enumerate(self.aux_heads):
            feature = outputs[-2 - k]
            scale = x.shape[-1] // feature.shape[-1]
            aux.append(head(feature)[..., : -(-height // scale), : -(-width // scale)])
        return logits, aux


def output_channels(mode: str, num_classes: int, regions: Sequence[Sequence[int]]) -> int:
    """Logit channels for a mode: 1 (binary), num_classes (multiclass), len(regions) (multilabel)."""
    if mode not in MODES:
        raise ConfigError(f"model.mode must be one of {MODES}, got {mode!r}")
    if mode == "binary":
        if num_classes != 2:
            raise ConfigError(
                f"model.mode=binary needs model.num_classes=2 (background, foreground), got {num_classes}"
            )
        return 1
    if mode == "multiclass":
        if num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {num_classes}")
        return num_classes
    if not regions:
        raise ConfigError(
            "model.mode=multilabel needs model.regions: one list of class ids per output channel, "
            "e.g. [[1, 2, 3], [2, 3], [3]] (nnU-Net's region-based training)"
        )
    for region in regions:
        bad = [c for c in region if not 0 < c < num_classes]
        if not region or bad:
            raise ConfigError(
                f"model.regions entry {list(region)} must list foreground class ids in 1..{num_classes - 1}"
            )
    return len(regions)


def build_unet(model_cfg, load_weights: bool = True) -> UNet:
    """Translate the ``model`` config section into keyword arguments (the model never sees the config).

    `load_weights=False` skips `model.backbone.weights` (a whole checkpoint is loaded right after).
    """
    if not 3 <= model_cfg.encoder_depth <= 5:
        raise ConfigError(f"model.encoder_depth must be 3, 4 or 5, got {model_cfg.encoder_depth}")
    backbone = build_backbone(
        model_cfg.backbone, out_indices=range(model_cfg.encoder_depth), load_weights=load_weights
    )
    return UNet(
        backbone,
        output_channels(model_cfg.mode, model_cfg.num_classes, model_cfg.regions),
        decoder_channels=model_cfg.decoder_channels,
        decoder_norm=model_cfg.decoder_norm,
        decoder_norm_groups=model_cfg.decoder_norm_groups,
        decoder_attention=model_cfg.decoder_attention,
        deep_supervision=model_cfg.deep_supervision,
    )
