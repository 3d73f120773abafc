"""The ResNet family as one configurable class.

Levels follow timm: 0 is the stem (conv1/bn1/relu, before the max-pool), 1..4 are layer1..layer4 (the
max-pool belongs to level 1). ``feature_info`` is written by the loop that builds the stages, so it cannot
drift from what ``forward`` returns. Attribute names follow torchvision, so its checkpoints load as they are.
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

from .blocks import BasicBlock, Bottleneck, NormLayer, PreActBasicBlock, PreActBottleneck, make_downsample

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
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
STEM_TYPES = ("default", "deep", "small")
OUTPUT_STRIDES = (8, 16, 32)
NUM_LEVELS = 5
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


def normalize_out_indices(out_indices: Sequence[int] | int) -> tuple[int, ...]:
    """Turn user levels (negatives allowed, -1 = layer4) into sorted-as-given non-negative levels."""
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    allowed = list(range(-NUM_LEVELS, NUM_LEVELS))
    levels = []
    for index in out_indices:
        if not isinstance(index, int) or index not in allowed:
            raise ValueError(
                f"out_indices entries must be in {allowed} (0=stem, 1..4=layer1..layer4), got {index!r}"
            )
        levels.append(index % NUM_LEVELS)
    if not levels:
        raise ValueError("out_indices must name at least one level in 0..4")
    if len(set(levels)) != len(levels):
        raise ValueError(f"out_indices names a level twice: {tuple(out_indices)}")
    return tuple(levels)


class ResNet(nn.Module):
    """ResNet backbone returning an ordered dict of the levels in ``out_indices``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        out_indices: levels to return, 0=stem (stride 2), 1..4=layer1..layer4; negatives count from layer4.
        frozen_stages: -1 trains everything, 0 freezes the stem, k freezes the stem and layer1..layerk.
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
        avg_down: average-pool shortcut (ResNet-D).
        se: squeeze-excitation in every block.
        preact: pre-activation blocks (ResNet v2, BN-ReLU-conv) with a final BN-ReLU after layer4.
        output_stride: 32, 16 or 8; smaller values replace the last strides by dilation (DeepLab).
        zero_init_last: zero the last BN weight of each block so it starts as identity (Goyal et al. 2017).
        drop_path_rate: stochastic depth, increasing linearly over blocks to this rate (Huang et al. 2016).
        norm_layer: a callable ``channels -> module``, BatchNorm2d by default (e.g. FrozenBatchNorm2d or a
            GroupNorm factory).
        grad_checkpointing: recompute layer1..layer4 in backward instead of keeping their activations
            (see :meth:`set_grad_checkpointing`).
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        out_indices: Sequence[int] | int = (1, 2, 3, 4),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        in_chans: int = 3,
        num_classes: int = 0,
        groups: int = 1,
        width_per_group: int = 64,
        stem_type: str = "default",
        stem_width: int = 32,
        avg_down: bool = False,
        se: bool = False,
        preact: bool = False,
        output_stride: int = 32,
        zero_init_last: bool = False,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        _one_of("depth", depth, DEPTHS)
        _one_of("stem_type", stem_type, STEM_TYPES)
        _one_of("output_stride", output_stride, OUTPUT_STRIDES)
        _one_of("frozen_stages", frozen_stages, range(-1, NUM_LEVELS))
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        block_kind, stage_blocks = DEPTHS[depth]
        block = BLOCKS[(block_kind, preact)]
        norm_layer = norm_layer or nn.BatchNorm2d

        self.depth = depth
        self.out_indices = normalize_out_indices(out_indices)
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
                nn.Conv2d(stem_width, 64, 3, stride=1, padding=1, bias=False),
            )
        elif stem_type == "small":
            self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        stem_stride = 1 if stem_type == "small" else 2
        self.maxpool: nn.Module = (
            nn.Identity() if stem_type == "small" else nn.MaxPool2d(3, stride=2, padding=1)
        )

        # Stages (levels 1..4); feature_info is recorded by this same loop.
        all_info = [FeatureInfo("stem", 64, stem_stride, 0)]
        stride = stem_stride * (1 if stem_type == "small" else 2)  # after the max-pool
        dilation = 1
        inplanes = 64
        total_blocks = sum(stage_blocks)
        block_index = 0
        for level, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), stage_blocks), start=1):
            stage_stride = 1 if level == 1 else 2
            first_dilation = dilation
            if level > 1 and stride * stage_stride > output_stride:
                dilation *= stage_stride
                stage_stride = 1
            stride *= stage_stride
            out_planes = planes * block.expansion
            downsample = None
            if stage_stride != 1 or inplanes != out_planes:
                downsample = make_downsample(
                    inplanes, out_planes, stage_stride, None if preact else norm_layer, avg_down
                )
            blocks = []
            for i in range(num_blocks):
                blocks.append(
                    block(
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
                    )
                )
                block_index += 1
            self.add_module(f"layer{level}", nn.Sequential(*blocks))
            inplanes = out_planes
            all_info.append(FeatureInfo(f"layer{level}", out_planes, stride, level))
        # Pre-activation nets leave layer4 un-normalised: the paper's final BN-ReLU belongs to level 4.
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
        self._apply_freeze()
        self._hold_frozen_norms()  # a new module is in train mode: frozen statistics must not move either
        self.register_load_state_dict_post_hook(_mark_loaded)

    # ----------------------------------------------------------------------------------------- structure
    def stage_modules(self, level: int) -> list[nn.Module]:
        """Modules that make up one level (0 = stem); used by freezing and summaries."""
        if level == 0:
            return [self.conv1, self.bn1]
        if level == 4:
            return [self.layer4, self.final_norm]
        return [getattr(self, f"layer{level}")]

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
        """Keep only the input of each of layer1..layer4 for backward and recompute the rest there.

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
        """Run one level (0 = stem, 1..4 = layer1..layer4) on the output of the level before it."""
        if level == 0:
            return self.relu(self.bn1(self.conv1(x)))
        if level == 1:
            return self.layer1(self.maxpool(x))
        if level == 4:
            return self.final_norm(self.layer4(x))
        return getattr(self, f"layer{level}")(x)

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
}


def create_backbone(arch: str, weights: str | None = None, partial_load: bool = False, **kwargs) -> ResNet:
    """Build a ResNet by architecture name, optionally loading weights.

    Args:
        arch: a key of :data:`ARCHS` (e.g. "resnet50", "resnext50_32x4d", "resnet50d").
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
