"""The ResNet family as one configurable class.

Levels follow timm: 0 is the stem (conv1/bn1/relu, before the max-pool), 1..4 are layer1..layer4 (the
max-pool belongs to level 1). A net with fewer stages (the CIFAR ResNets and WRN-28-10 have three) has
levels 0..3 and no level 4; -1 is always its last stage. ``feature_info`` is written by the loop that builds
the stages, so it cannot drift from what ``forward`` returns. Attribute names follow torchvision (and timm
for the Res2Net block), so their checkpoints load as they are.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import (
    BasicBlock,
    Bottle2neck,
    Bottleneck,
    NormLayer,
    PreActBasicBlock,
    PreActBottleneck,
    ZeroPadShortcut,
    make_downsample,
)
from .dcn import add_deformable_convs

# depth -> (block kind, blocks per stage): the OpenMMLab-style table in place of one factory per depth.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
BLOCKS = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("bottle2neck", False): Bottle2neck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
BLOCK_TYPES = ("basic", "bottleneck", "bottle2neck")
STEM_TYPES = ("default", "deep", "small")
SHORTCUTS = ("projection", "zero_pad")
OUTPUT_STRIDES = (8, 16, 32)
STAGE_CHANNELS = (64, 128, 256, 512)  # base widths (planes) of layer1..layer4 in the ImageNet nets
NUM_LEVELS = 5  # stem + 4 stages; a net with k stages has k + 1 levels (ResNet.num_levels)
LEVEL_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")


class FeatureInfo(NamedTuple):
    """What one returned level looks like: heads read their input widths from here."""

    name: str
    channels: int
    stride: int
    level: int


class FeatureInfoList(list):
    """A list of :class:`FeatureInfo` with column accessors (``.channels``, ``.strides``, ``.names``)."""

    @property
    def channels(self) -> list[int]:
        return [info.channels for info in self]

    @property
    def strides(self) -> list[int]:
        return [info.stride for info in self]

    @property
    def names(self) -> list[str]:
        return [info.name for info in self]


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def normalize_out_indices(out_indices: Sequence[int] | int, num_levels: int = NUM_LEVELS) -> tuple[int, ...]:
    """Turn user levels (negatives allowed, -1 = the last stage) into non-negative levels, in the given order.

    ``num_levels`` is the stem plus the number of stages: 5 for the ImageNet nets, 4 for the CIFAR ones.
    """
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    last = num_levels - 1
    allowed = list(range(-num_levels, num_levels))
    levels = []
    for index in out_indices:
        if not isinstance(index, int) or index not in allowed:
            raise ValueError(
                f"out_indices entries must be in {allowed} (0=stem, 1..{last}=layer1..layer{last} of this "
                f"{last}-stage ResNet), got {index!r}"
            )
        levels.append(index % num_levels)
    if not levels:
        raise ValueError(f"out_indices must name at least one level in 0..{last}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"out_indices names a level twice: {tuple(out_indices)}")
    return tuple(levels)


def stage_plan(
    depth: int, block: str = "", layers: Sequence[int] | None = None
) -> tuple[str, tuple[int, ...]]:
    """Block type and blocks per stage: the row of :data:`DEPTHS` unless ``block``/``layers`` are given.

    With ``layers`` (timm's name), the number of stages is ``len(layers)`` (1..4) and ``depth`` only names
    the network (20 for ResNet-20); ``block`` is then needed unless ``depth`` is in :data:`DEPTHS`.
    """
    if layers is None:
        if depth not in DEPTHS:
            raise ValueError(
                f"depth must be one of {list(DEPTHS)}, got {depth!r}; other depths need layers=... "
                "(blocks per stage), as the CIFAR ResNets in ARCHS have"
            )
        default_block, layers = DEPTHS[depth]
    else:
        layers = tuple(layers)
        if not 1 <= len(layers) <= len(STAGE_CHANNELS) or not all(
            isinstance(n, int) and n >= 1 for n in layers
        ):
            raise ValueError(
                f"layers must give 1 to {len(STAGE_CHANNELS)} positive block counts (one per stage), "
                f"got {layers!r}"
            )
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        default_block = DEPTHS[depth][0] if depth in DEPTHS else ""
    block = block or default_block
    if not block:
        raise ValueError(f"depth={depth} is not in DEPTHS: give block, one of {list(BLOCK_TYPES)}")
    _one_of("block", block, BLOCK_TYPES)
    return block, layers


def arch_num_levels(arch: str) -> int:
    """Levels of an :data:`ARCHS` architecture without building it: the stem plus its stages (5 or 4)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {sorted(ARCHS)}")
    kwargs = ARCHS[arch][0]
    _, layers = stage_plan(kwargs.get("depth", 50), kwargs.get("block", ""), kwargs.get("layers"))
    return len(layers) + 1


def _stage_channels(channels: Sequence[int] | None, num_stages: int) -> tuple[int, ...]:
    if channels is None:
        return STAGE_CHANNELS[:num_stages]
    channels = tuple(channels)
    if len(channels) != num_stages or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise ValueError(
            f"channels must give one positive width per stage ({num_stages} stages), got {channels!r}"
        )
    return channels


def _shortcut(
    kind: str, in_planes: int, out_planes: int, stride: int, norm_layer: NormLayer | None, avg_down: bool
) -> nn.Module:
    """The first block's shortcut where the shape changes: a projection (option B) or zero-padding (A)."""
    if kind == "zero_pad":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    return make_downsample(in_planes, out_planes, stride, norm_layer, avg_down)


class ResNet(nn.Module):
    """ResNet backbone returning an ordered dict of the levels in ``out_indices``.

    Args:
        depth: 18, 34, 50, 101 or 152 (blocks per stage from :data:`DEPTHS`); with ``layers``, any positive
            number naming the network (20 for ResNet-20).
        layers: blocks per stage, overriding the depth's; its length (1..4) is the number of stages.
        block: "basic", "bottleneck" or "bottle2neck" (Res2Net); "" = the depth's own.
        channels: base width (``planes``) of each stage, (64, 128, 256, 512) by default; a stage outputs
            ``planes * block.expansion`` channels.
        out_indices: levels to return, 0=stem (stride 2), 1..4=layer1..layer4 (1..3 for a 3-stage net,
            which has no level 4); negatives count from the last stage. None = every stage.
        frozen_stages: -1 trains everything, 0 freezes the stem, k freezes the stem and layer1..layerk
            (up to the number of stages).
            Frozen means ``requires_grad=False`` and BatchNorm statistics that never move, also after
            ``model.train()``; frozen stages run without autograd so they keep no activations.
        norm_eval: keep every BatchNorm in eval mode while training (small-batch detection).
        in_chans: input channels.
        num_classes: if > 0, a torchvision-style ``fc`` head used by :meth:`forward_head`.
        groups, width_per_group: ResNeXt cardinality and width (32, 4 for resnext50_32x4d); wide ResNets
            use ``width_per_group=128``.
        stem_type: "default" (7x7/2 conv + 3x3/2 max-pool), "deep" (three 3x3 convs, ResNet-C/D) or "small"
            (one 3x3/1 conv and no max-pool, for 32x32 images).
        stem_width: width of the first two convs of the deep stem.
        stem_channels: output channels of the stem (64; 16 for the CIFAR ResNets and WRN-28-10).
        shortcut: where a block changes shape, "projection" (1x1 conv + norm, option B of He et al. 2016)
            or "zero_pad" (parameter-free subsampling and zero channels, option A, the CIFAR nets' own).
        avg_down: average-pool shortcut (ResNet-D).
        scale: Res2Net scale, the number of channel groups the 3x3 conv is split into (block="bottle2neck").
        se: squeeze-excitation in every block.
        preact: pre-activation blocks (ResNet v2, BN-ReLU-conv) with a final BN-ReLU after the last stage.
        output_stride: 32, 16 or 8; smaller values replace the last strides by dilation (DeepLab).
        zero_init_last: zero the last BN weight of each block so it starts as identity (Goyal et al. 2017).
        drop_path_rate: stochastic depth, increasing linearly over blocks to this rate (Huang et al. 2016).
        norm_layer: a callable ``channels -> module``, BatchNorm2d by default (e.g. FrozenBatchNorm2d or a
            GroupNorm factory).
        grad_checkpointing: recompute every stage in backward instead of keeping its activations
            (see :meth:`set_grad_checkpointing`).
        dcn_stages: stage levels (1..4 = layer1..layer4) whose blocks get a modulated deformable 3x3 conv
            (DCNv2, :mod:`backbones.dcn`), e.g. (2, 3, 4) as mmdet's ``dconv_c3-c5``. Plain checkpoints load
            into them; at initialisation the network computes exactly what the plain one does.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        layers: Sequence[int] | None = None,
        block: str = "",
        channels: Sequence[int] | None = None,
        out_indices: Sequence[int] | int | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        in_chans: int = 3,
        num_classes: int = 0,
        groups: int = 1,
        width_per_group: int = 64,
        stem_type: str = "default",
        stem_width: int = 32,
        stem_channels: int = 64,
        shortcut: str = "projection",
        avg_down: bool = False,
        scale: int = 4,
        se: bool = False,
        preact: bool = False,
        output_stride: int = 32,
        zero_init_last: bool = False,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer | None = None,
        grad_checkpointing: bool = False,
        dcn_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        block_kind, stage_blocks = stage_plan(depth, block, layers)
        num_levels = len(stage_blocks) + 1
        stage_channels = _stage_channels(channels, len(stage_blocks))
        _one_of("stem_type", stem_type, STEM_TYPES)
        _one_of("shortcut", shortcut, SHORTCUTS)
        _one_of("output_stride", output_stride, OUTPUT_STRIDES)
        _one_of("frozen_stages", frozen_stages, range(-1, num_levels))
        for name, value in (("in_chans", in_chans), ("stem_channels", stem_channels), ("scale", scale)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        if (block_kind, preact) not in BLOCKS:
            raise ValueError(f"preact=True needs block 'basic' or 'bottleneck', got {block_kind!r}")
        if avg_down and shortcut != "projection":
            raise ValueError("avg_down=True changes the projection shortcut: it needs shortcut='projection'")
        block_cls = BLOCKS[(block_kind, preact)]
        block_kwargs = {"scale": scale} if block_kind == "bottle2neck" else {}
        norm_layer = norm_layer or nn.BatchNorm2d

        self.depth = depth
        self.num_stages = len(stage_blocks)
        self.num_levels = num_levels
        if out_indices is None:
            out_indices = tuple(range(1, num_levels))
        self.out_indices = normalize_out_indices(out_indices, num_levels)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.in_chans = in_chans
        self.preact = preact
        self.grad_checkpointing = grad_checkpointing
        self.pretrained_loaded = False  # set by any load_state_dict; freezing random weights earns a warning
        self._warned_random_freeze = False

        # Stem (level 0).
        if stem_type == "deep":
            self.conv1: nn.Module = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 3, stride=2, padding=1, bias=False),
                norm_layer(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
                norm_layer(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_channels, 3, stride=1, padding=1, bias=False),
            )
        elif stem_type == "small":
            self.conv1 = nn.Conv2d(in_chans, stem_channels, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        stem_stride = 1 if stem_type == "small" else 2
        self.maxpool: nn.Module = (
            nn.Identity() if stem_type == "small" else nn.MaxPool2d(3, stride=2, padding=1)
        )

        # Stages (levels 1..num_stages); feature_info is recorded by this same loop.
        all_info = [FeatureInfo("stem", stem_channels, stem_stride, 0)]
        stride = stem_stride * (1 if stem_type == "small" else 2)  # after the max-pool
        dilation = 1
        inplanes = stem_channels
        total_blocks = sum(stage_blocks)
        block_index = 0
        for level, (planes, num_blocks) in enumerate(zip(stage_channels, stage_blocks), start=1):
            stage_stride = 1 if level == 1 else 2
            first_dilation = dilation
            if level > 1 and stride * stage_stride > output_stride:
                dilation *= stage_stride
                stage_stride = 1
            stride *= stage_stride
            out_planes = planes * block_cls.expansion
            downsample = None
            if stage_stride != 1 or inplanes != out_planes:
                downsample = _shortcut(
                    shortcut, inplanes, out_planes, stage_stride, None if preact else norm_layer, avg_down
                )
            blocks = []
            for i in range(num_blocks):
                blocks.append(
                    block_cls(
                        inplanes if i == 0 else out_planes,
                        planes,
                        stride=stage_stride if i == 0 else 1,
                        downsample=downsample if i == 0 else None,
                        groups=groups,
                        base_width=width_per_group,
                        dilation=dilation,
                        first_dilation=first_dilation if i == 0 else dilation,
                        norm_layer=norm_layer,
                        se=se,
                        drop_path=drop_path_rate * block_index / max(total_blocks - 1, 1),
                        **block_kwargs,
                    )
                )
                block_index += 1
            self.add_module(f"layer{level}", nn.Sequential(*blocks))
            inplanes = out_planes
            all_info.append(FeatureInfo(f"layer{level}", out_planes, stride, level))
        # Pre-activation nets leave the last stage un-normalised: the paper's final BN-ReLU belongs to it.
        self.final_norm: nn.Module = (
            nn.Sequential(norm_layer(inplanes), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )

        self.all_feature_info = FeatureInfoList(all_info)
        self.feature_info = FeatureInfoList(all_info[level] for level in self.out_indices)
        self.num_features = inplanes
        self.num_classes = num_classes
        self.fc = nn.Linear(inplanes, num_classes) if num_classes > 0 else None
        self._last_level = max(self.out_indices)
        self.min_input_size = all_info[self._last_level].stride

        self._init_weights(zero_init_last)
        self.dcn_stages = add_deformable_convs(self, dcn_stages)  # after the init: offsets start at zero
        self._apply_freeze()
        self._hold_frozen_norms()  # a new module is in train mode: frozen statistics must not move either
        self.register_load_state_dict_post_hook(_mark_loaded)

    # ----------------------------------------------------------------------------------------- structure
    def stage_modules(self, level: int) -> list[nn.Module]:
        """Modules that make up one level (0 = stem); used by freezing and summaries."""
        if not isinstance(level, int) or not 0 <= level < self.num_levels:
            raise ValueError(
                f"level must be in 0..{self.num_levels - 1} for this {self.num_stages}-stage ResNet, "
                f"got {level!r}"
            )
        if level == 0:
            return [self.conv1, self.bn1]
        stage = getattr(self, f"layer{level}")
        return [stage, self.final_norm] if level == self.num_stages else [stage]

    def _init_weights(self, zero_init_last: bool) -> None:
        # Kaiming (fan_out) as torchvision and timm do; BN starts as identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_last:
            for module in self.modules():
                last_norm = getattr(module, "last_norm", None)
                norm = last_norm() if callable(last_norm) else None
                if norm is not None and getattr(norm, "weight", None) is not None:
                    nn.init.zeros_(norm.weight)

    # ----------------------------------------------------------------------------------------- freezing
    def _apply_freeze(self) -> None:
        for level in range(self.frozen_stages + 1):
            for module in self.stage_modules(level):
                for param in module.parameters():
                    param.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        """Switch train/eval mode, keeping frozen stages (and all norms with ``norm_eval``) in eval."""
        super().train(mode)
        if not mode:
            return self
        if self.frozen_stages >= 0 and not self.pretrained_loaded and not self._warned_random_freeze:
            self._warned_random_freeze = True
            warnings.warn(
                f"frozen_stages={self.frozen_stages} freezes randomly initialised weights: no checkpoint was "
                "loaded into this ResNet. Pass weights=... or use frozen_stages=-1.",
                UserWarning,
                stacklevel=2,
            )
        self._hold_frozen_norms()
        return self

    def _hold_frozen_norms(self) -> None:
        """Frozen stages (and every BatchNorm with ``norm_eval``) in eval mode."""
        for level in range(self.frozen_stages + 1):
            for module in self.stage_modules(level):
                module.eval()
        if self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # ----------------------------------------------------------------------------------------- checkpointing
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Keep only the input of each stage (layer1, layer2, ...) for backward and recompute the rest there.

        Far fewer activations are held from forward to backward, and the peak in backward (one level
        recomputed at a time) drops too, for about one more forward pass per step. It applies to training
        forwards with autograd on; eval, ``no_grad`` and frozen stages (which run without autograd) are
        unchanged. The method name is timm's.
        """
        self.grad_checkpointing = enable

    def _checkpointed_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """``forward_level`` under non-reentrant checkpointing; the recomputation leaves norm statistics be.

        The RNG state is restored for the recomputation (``preserve_rng_state``), so stochastic depth drops
        the same blocks both times.
        """
        contexts = functools.partial(_recompute_contexts, self.stage_modules(level))
        return checkpoint(self.forward_level, level, x, use_reentrant=False, context_fn=contexts)

    # ----------------------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected a 4-D batch (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels (in_chans={self.in_chans}), got {x.shape[1]}"
            )
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is smaller than the network stride {self.min_input_size} "
                f"for the requested levels {self.out_indices}; use inputs of at least "
                f"{self.min_input_size}x{self.min_input_size}"
            )

    def forward_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Run one level (0 = stem, 1.. = layer1..) on the output of the level before it."""
        if level == 0:
            return self.relu(self.bn1(self.conv1(x)))
        if level == 1:
            x = self.maxpool(x)
        x = getattr(self, f"layer{level}")(x)
        return self.final_norm(x) if level == self.num_stages else x

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Return ``{name: feature}`` for the levels in ``out_indices``, in that order."""
        if not torch.jit.is_tracing():
            self._check_input(x)
        features: dict[str, torch.Tensor] = {}
        checkpointing = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for level in range(self._last_level + 1):
            if level <= self.frozen_stages and not x.requires_grad:
                # Frozen levels keep no activations for backward: that is where the memory and
                # speed of partial fine-tuning come from.
                with torch.no_grad():
                    x = self.forward_level(level, x)
            elif checkpointing and level > 0:
                x = self._checkpointed_level(level, x)
            else:
                x = self.forward_level(level, x)
            if level in self.out_indices:
                features[LEVEL_NAMES[level]] = x
        return OrderedDict((LEVEL_NAMES[level], features[LEVEL_NAMES[level]]) for level in self.out_indices)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the ``fc`` classifier (needs ``num_classes > 0``)."""
        if self.fc is None:
            raise ValueError("forward_head needs a classifier: build the backbone with num_classes > 0")
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _recompute_contexts(modules: Sequence[nn.Module]):
    """Checkpoint's ``context_fn``: the forward runs as it is; the recomputation restores the buffers."""
    return contextlib.nullcontext(), _buffers_restored(modules)


@contextlib.contextmanager
def _buffers_restored(modules: Sequence[nn.Module]):
    """Put every buffer of ``modules`` back as it was on entry, also when the block is left early.

    Recomputation runs each train-mode BatchNorm forward a second time on the same batch, which would move
    ``running_mean``/``running_var`` (and ``num_batches_tracked``) twice per step. Non-reentrant
    checkpointing stops a recomputation early by raising, hence the ``finally``.
    """
    saved = [(buffer, buffer.clone()) for module in modules for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _mark_loaded(module: nn.Module, incompatible_keys) -> None:
    # Runs for this module also when a parent (a detector, a U-Net) loads a state dict.
    module.pretrained_loaded = True


def _cifar_resnet(depth: int) -> dict:
    """He et al. 2016, section 4.2: 3 stages of (depth - 2) / 6 basic blocks, 16/32/64 wide, strides 1/2/2,
    on a 3x3 16-channel stem without max-pool, with the paper's parameter-free shortcut (option A)."""
    return dict(
        depth=depth,
        layers=((depth - 2) // 6,) * 3,
        block="basic",
        channels=(16, 32, 64),
        stem_type="small",
        stem_channels=16,
        shortcut="zero_pad",
    )


# Architectures: name -> (ResNet keyword arguments, torchvision builder name or None). A plain table, so the
# class that is built is always ResNet and the arguments are visible here.
ARCHS: dict[str, tuple[dict, str | None]] = {
    "resnet18": (dict(depth=18), "resnet18"),
    "resnet34": (dict(depth=34), "resnet34"),
    "resnet50": (dict(depth=50), "resnet50"),
    "resnet101": (dict(depth=101), "resnet101"),
    "resnet152": (dict(depth=152), "resnet152"),
    "resnext50_32x4d": (dict(depth=50, groups=32, width_per_group=4), "resnext50_32x4d"),
    "resnext101_32x8d": (dict(depth=101, groups=32, width_per_group=8), "resnext101_32x8d"),
    "resnext101_64x4d": (dict(depth=101, groups=64, width_per_group=4), "resnext101_64x4d"),
    "wide_resnet50_2": (dict(depth=50, width_per_group=128), "wide_resnet50_2"),
    "wide_resnet101_2": (dict(depth=101, width_per_group=128), "wide_resnet101_2"),
    "resnet18d": (dict(depth=18, stem_type="deep", avg_down=True), None),
    "resnet34d": (dict(depth=34, stem_type="deep", avg_down=True), None),
    "resnet50d": (dict(depth=50, stem_type="deep", avg_down=True), None),
    "resnet101d": (dict(depth=101, stem_type="deep", avg_down=True), None),
    "seresnet50": (dict(depth=50, se=True), None),
    "preact_resnet18": (dict(depth=18, preact=True), None),
    "preact_resnet50": (dict(depth=50, preact=True), None),
    # CIFAR ResNets (3 stages: levels 0..3, no layer4).
    "resnet20": (_cifar_resnet(20), None),
    "resnet32": (_cifar_resnet(32), None),
    "resnet44": (_cifar_resnet(44), None),
    "resnet56": (_cifar_resnet(56), None),
    "resnet110": (_cifar_resnet(110), None),
    # WRN-28-10 (Zagoruyko & Komodakis 2016): (28 - 4) / 6 = 4 pre-activation basic blocks per stage, widths
    # 16/32/64 times 10, projection shortcuts where the width changes, a final BN-ReLU.
    "wide_resnet28_10": (
        dict(
            depth=28,
            layers=(4, 4, 4),
            block="basic",
            channels=(160, 320, 640),
            stem_type="small",
            stem_channels=16,
            preact=True,
        ),
        None,
    ),
    # Res2Net (Gao et al. 2019), timm's layout: width per split 26 (48), 4 (2) splits.
    "res2net50_26w_4s": (dict(depth=50, block="bottle2neck", width_per_group=26, scale=4), None),
    "res2net50_48w_2s": (dict(depth=50, block="bottle2neck", width_per_group=48, scale=2), None),
    "res2net101_26w_4s": (dict(depth=101, block="bottle2neck", width_per_group=26, scale=4), None),
}


def create_backbone(arch: str, weights: str | None = None, partial_load: bool = False, **kwargs) -> ResNet:
    """Build a ResNet by architecture name, optionally loading weights.

    Args:
        arch: a key of :data:`ARCHS` (e.g. "resnet50", "resnext50_32x4d", "resnet50d", "resnet20",
            "wide_resnet28_10", "res2net50_26w_4s").
        weights: None, a torchvision weight name ("IMAGENET1K_V2", "DEFAULT"), a timm name
            ("resnet50.a1_in1k"), a local file or a URL, also a whole-model checkpoint (classifier,
            detector, U-Net, ...) whose backbone is taken. See :func:`backbones.weights.load_pretrained`.
        partial_load: accept weights that fill only part of the backbone.
        **kwargs: :class:`ResNet` arguments; they override the architecture's own.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {sorted(ARCHS)}")
    arch_kwargs, _ = ARCHS[arch]
    model = ResNet(**{**arch_kwargs, **kwargs})
    if weights:
        from .weights import load_pretrained  # late import: weights.py imports this module

        load_pretrained(model, weights, arch=arch, partial=partial_load)
    return model


def _builder(arch: str) -> Callable[..., ResNet]:
    def build(weights: str | None = None, partial_load: bool = False, **kwargs) -> ResNet:
        return create_backbone(arch, weights=weights, partial_load=partial_load, **kwargs)

    build.__name__ = arch
    build.__qualname__ = arch
    build.__doc__ = f"Build ``{arch}`` ({ARCHS[arch][0]}); see :func:`create_backbone` and :class:`ResNet`."
    return build


resnet18 = _builder("resnet18")
resnet34 = _builder("resnet34")
resnet50 = _builder("resnet50")
resnet101 = _builder("resnet101")
resnet152 = _builder("resnet152")
resnext50_32x4d = _builder("resnext50_32x4d")
resnext101_32x8d = _builder("resnext101_32x8d")
resnext101_64x4d = _builder("resnext101_64x4d")
wide_resnet50_2 = _builder("wide_resnet50_2")
wide_resnet101_2 = _builder("wide_resnet101_2")
resnet50d = _builder("resnet50d")
seresnet50 = _builder("seresnet50")
resnet20 = _builder("resnet20")
resnet32 = _builder("resnet32")
resnet44 = _builder("resnet44")
resnet56 = _builder("resnet56")
resnet110 = _builder("resnet110")
wide_resnet28_10 = _builder("wide_resnet28_10")
res2net50_26w_4s = _builder("res2net50_26w_4s")
res2net50_48w_2s = _builder("res2net50_48w_2s")
res2net101_26w_4s = _builder("res2net101_26w_4s")
