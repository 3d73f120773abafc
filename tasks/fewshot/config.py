"""Typed config of few-shot base training (`tools/train_fewshot.py`); see configs/fewshot/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tasks.common.backbone import MOVED_BACKBONE_KEYS, BackboneConfig
from tasks.engine.config import RunConfig

from .transforms import FewShotAugmentConfig

# model.method -> the head base training uses (ProtoNet trains on episodes, without a head).
TRAIN_METHODS = {"baseline": "linear", "baseline++": "cosine", "protonet": "none"}


@dataclass
class FewShotModelConfig:
    """Section `model:`: the backbone and what base training optimises.

    method: "baseline" (linear head over base classes), "baseline++" (cosine head) or "protonet"
    (episodic training, no head). Every method is evaluated the same way by tools/eval_fewshot.py.
    """

    MOVED_KEYS: ClassVar[dict[str, str]] = MOVED_BACKBONE_KEYS

    method: str = "baseline"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # in_chans 1 for grayscale images
    cosine_scale: float = 0.0  # Baseline++ logit scale; 0 = Chen et al.'s rule (2 if <= 200 classes else 10)


@dataclass
class FewShotDataConfig:
    """Section `data:`: the class-folder dataset, its class-level split and the episodes used in training."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {"channels": "model.backbone.in_chans"}

    root: str = ""
    image_size: int = 32
    split_fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])  # base, val, novel
    split_seed: int = 0
    split_by: str = "class"  # class | group (whole groups, e.g. alphabets, go to one part)
    split_file: str = ""  # a JSON split (tasks.fewshot.splits.save_split) instead of fractions/seed
    rotations: list[int] = field(default_factory=list)  # e.g. [0, 90, 180, 270]: rotated copies = new classes
    augment: FewShotAugmentConfig = field(default_factory=FewShotAugmentConfig)
    cache_images: bool = True  # keep decoded, resized images in memory (set false for large datasets)
    # Episodic training (method=protonet): one episode per optimiser step.
    n_way: int = 5
    k_shot: int = 1
    q_query: int = 15
    episodes_per_epoch: int = 100
    same_group: bool = False
    # Validation: nearest-prototype accuracy on val-class episodes, embedded once per evaluation.
    val_n_way: int = 5
    val_k_shot: int = 1
    val_q_query: int = 5
    val_episodes: int = 200
    val_seed: int = 0


@dataclass
class FewShotEvalConfig:
    """Section `eval:`: how validation episodes and tools/eval_fewshot.py embed images."""

    # test-time views, each image's embeddings of all views concatenated (a prototype score then adds up
    # the views' scores): [] = off; any of hflip, vflip, rotate90
    tta: list[str] = field(default_factory=list)


@dataclass
class FewShotConfig(RunConfig):
    """Whole config of a few-shot base-training run."""

    model: FewShotModelConfig = field(default_factory=FewShotModelConfig)
    data: FewShotDataConfig = field(default_factory=FewShotDataConfig)
    eval: FewShotEvalConfig = field(default_factory=FewShotEvalConfig)
    output_dir: str = "runs/fewshot"
