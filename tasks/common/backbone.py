"""The `model.backbone:` config section and its one builder, the same in all four tasks.

A task's model section holds `backbone: BackboneConfig`; its builder calls `build_backbone(cfg.backbone,
out_indices=...)` and passes the result to the head. So `model.backbone.frozen_stages=2` means the same
thing to every tool, and a new backbone option is written once here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from backbones import ARCHS, ResNet, arch_num_levels, create_backbone
from tasks.engine.checks import check_one_of, check_range, invalid
from tasks.engine.config import ConfigError, config_to_dict

STEM_TYPES = ("default", "deep", "small")
NORMS = ("bn", "frozen_bn", "gn", "in")
OUTPUT_STRIDES = (8, 16, 32)
# Backbone keys that say where training starts or how it runs, not what the network is (model_signature).
NOT_IN_SIGNATURE = (
    "weights",
    "partial_load",
    "frozen_stages",
    "norm_eval",
    "drop_path_rate",
    "grad_checkpointing",
    "zero_init_last",
)

# Keys that used to sit directly in `model:` and their place now; a config that still uses one gets an
# error naming the new key, and older checkpoints' configs are moved (upgrade_model_section).
MOVED_BACKBONE_KEYS = {
    **{
        key: f"model.backbone.{key}"
        for key in (
            "arch",
            "weights",
            "in_chans",
            "stem_type",
            "frozen_stages",
            "norm_eval",
            "drop_path_rate",
        )
    },
    "output_stride": "model.backbone.output_stride",
    "norm": "model.backbone.norm",
    "gn_groups": "model.backbone.norm_groups",
}


@dataclass
class BackboneConfig:
    """The ResNet under every task's head (section `model.backbone:`)."""

    # a backbones.ARCHS key: resnet18..152, resnext*, wide_resnet*, resnet*d, res2net*, 3-stage resnet20..110
    arch: str = "resnet50"
    weights: str = ""  # "" = random init; torchvision name, timm tag, file, URL, or any tool's checkpoint
    partial_load: bool = False  # accept weights that fill only part of the backbone (else an error)
    in_chans: int = 3  # input channels; pretrained RGB weights are adapted (1: sum, C: repeat * 3/C)
    stem_type: str = ""  # "" = the arch's own (deep for resnet*d) | default | deep | small (32 px images)
    frozen_stages: int = -1  # -1 none, 0 the stem, k the stem and layer1..k (weights and BN statistics)
    norm_eval: bool = False  # keep every BatchNorm in eval mode while training (small batches)
    norm: str = "bn"  # bn | frozen_bn (torchvision FrozenBatchNorm2d) | gn (GroupNorm) | in (InstanceNorm)
    norm_groups: int = 32  # GroupNorm groups for norm=gn
    drop_path_rate: float = 0.0  # stochastic depth, linear over the blocks
    # random init only: each block's last norm starts at 0, so the block starts as identity (timm's default)
    zero_init_last: bool = False
    output_stride: int = 32  # 32 | 16 | 8: later strides become dilation (DeepLab)
    grad_checkpointing: bool = False  # recompute layer1..4 in backward: less activation memory, slower steps
    # levels (1..4 = layer1..4) whose 3x3 convs become modulated deformable convs (DCNv2); [] = none
    dcn_stages: list[int] = field(default_factory=list)


def validate_backbone(cfg: BackboneConfig, where: str = "model.backbone") -> None:
    """Refuse values the builder would fail on later, naming the dotted key and the allowed values."""
    check_one_of(f"{where}.arch", cfg.arch, sorted(ARCHS))
    check_one_of(f"{where}.stem_type", cfg.stem_type, ["", *STEM_TYPES])
    check_one_of(f"{where}.norm", cfg.norm, NORMS)
    check_one_of(f"{where}.output_stride", cfg.output_stride, OUTPUT_STRIDES)
    check_one_of(f"{where}.frozen_stages", cfg.frozen_stages, range(-1, arch_num_levels(cfg.arch)))
    check_range(f"{where}.in_chans", cfg.in_chans, 1)
    check_range(f"{where}.norm_groups", cfg.norm_groups, 1)
    check_range(f"{where}.drop_path_rate", cfg.drop_path_rate, 0.0, 1.0, high_open=True)
    stages = list(range(1, arch_num_levels(cfg.arch)))  # 1..4, or 1..3 for the 3-stage CIFAR nets
    levels = cfg.dcn_stages
    if not all(level in stages for level in levels) or len(set(levels)) != len(levels):
        raise invalid(
            f"{where}.dcn_stages",
            levels,
            f"expected distinct stage levels of {cfg.arch} from {stages} (layer1..layer{stages[-1]}), "
            f"e.g. {stages[1:]}",
        )
    if levels and ARCHS[cfg.arch][0].get("block") == "bottle2neck":
        raise invalid(
            f"{where}.dcn_stages",
            levels,
            f"{cfg.arch} splits each 3x3 conv into Res2Net groups; deformable convs replace the one 3x3 conv "
            "of resnet/resnext blocks: choose such an arch or dcn_stages=[]",
        )


def check_levels(arch: str, out_indices: Sequence[int], where: str = "model.backbone") -> None:
    """Refuse a head that reads levels the arch lacks (level 4 of a 3-stage CIFAR net), naming the arch."""
    num_levels = arch_num_levels(arch)
    missing = [level for level in out_indices if not -num_levels <= level < num_levels]
    if missing:
        raise invalid(
            f"{where}.arch",
            arch,
            f"this model reads backbone levels {list(out_indices)}, but {arch} has {num_levels - 1} "
            f"stages (levels 0..{num_levels - 1}, no level {missing[0]}); "
            "choose a 4-stage arch, e.g. resnet18",
        )


def norm_layer(cfg: BackboneConfig) -> type[nn.Module] | functools.partial | None:
    """The `norm_layer` callable for `cfg.norm` (None = the ResNet's own BatchNorm2d)."""
    if cfg.norm == "frozen_bn":
        return FrozenBatchNorm2d
    if cfg.norm == "gn":
        return functools.partial(group_norm, groups=cfg.norm_groups)
    if cfg.norm == "in":
        return instance_norm
    return None


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with `groups` groups; refuses widths it does not divide (a clear error, not torch's)."""
    if channels % groups:
        raise ConfigError(
            f"model.backbone.norm_groups={groups} must divide every width ({channels} does not)"
        )
    return nn.GroupNorm(groups, channels)


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """InstanceNorm with a learned scale and shift and no running statistics (nnU-Net's choice for small
    batches): it normalises each image by itself, in training and in eval alike."""
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


def build_backbone(cfg: BackboneConfig, out_indices: Sequence[int], load_weights: bool = True) -> ResNet:
    """The one place that turns the backbone section into `backbones.create_backbone` arguments.

    Args:
        cfg: the task's `model.backbone` section.
        out_indices: the levels the head reads (0 = stem, 1..4 = layer1..layer4).
        load_weights: load `cfg.weights` (off when a whole checkpoint is loaded right after).
    """
    validate_backbone(cfg)
    check_levels(cfg.arch, out_indices)
    kwargs = dict(
        out_indices=tuple(out_indices),
        in_chans=cfg.in_chans,
        frozen_stages=cfg.frozen_stages,
        norm_eval=cfg.norm_eval,
        norm_layer=norm_layer(cfg),
        drop_path_rate=cfg.drop_path_rate,
        zero_init_last=cfg.zero_init_last,
        output_stride=cfg.output_stride,
        grad_checkpointing=cfg.grad_checkpointing,
        dcn_stages=tuple(cfg.dcn_stages),
    )
    if cfg.stem_type:  # "" keeps the arch's own stem (resnet50d's deep stem)
        kwargs["stem_type"] = cfg.stem_type
    weights = (cfg.weights or None) if load_weights else None
    return create_backbone(cfg.arch, weights=weights, partial_load=cfg.partial_load, **kwargs)


def model_signature(model_cfg: object) -> dict:
    """A task's `model` section as resume and eval compare it: the network, not how it is trained.

    `backbone.weights`, `partial_load` and `zero_init_last` say where training started; `frozen_stages`,
    `norm_eval`, `drop_path_rate` and `grad_checkpointing` how it is trained. None changes the tensors a
    checkpoint holds (a resume that changes what is trainable is refused by the optimizer-state check
    instead).
    """
    signature = config_to_dict(model_cfg)
    for key in NOT_IN_SIGNATURE:
        signature.get("backbone", {}).pop(key, None)
    return signature


def upgrade_model_section(config: dict) -> dict:
    """A saved config dict with the backbone keys of older checkpoints moved into `model.backbone`."""
    model = dict(config.get("model") or {})
    backbone = dict(model.get("backbone") or {})
    for key, place in MOVED_BACKBONE_KEYS.items():
        if key in model:
            backbone[place.rsplit(".", 1)[1]] = model.pop(key)
    if backbone.get("weights") is None:
        backbone.pop("weights", None)  # older segmentation configs wrote weights: null
    if backbone.get("stem_type") == "default":
        backbone["stem_type"] = ""  # older configs always wrote the default stem: same network
    model["backbone"] = backbone
    return {**config, "model": model}
