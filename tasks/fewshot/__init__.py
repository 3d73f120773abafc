"""Few-shot transfer on the shared ResNet: Baseline / Baseline++ (Chen et al., ICLR 2019), ProtoNet and
SimpleShot, with seeded, replayable episodes and embed-once evaluation. See README.md."""

from .data import ClassFolderIndex, FewShotDataError, scan_class_folders
from .episodes import Episode, EpisodeSpec, load_episodes, sample_episodes, save_episodes
from .methods import METHODS, FinetuneSettings, HeadTransfer, ProtoNet, SimpleShot, build_method
from .metrics import evaluate_episodes, mean_and_interval
from .model import FewShotNet, build_fewshot_net
from .splits import split_classes

__all__ = [
    "METHODS",
    "ClassFolderIndex",
    "Episode",
    "EpisodeSpec",
    "FewShotDataError",
    "FewShotNet",
    "FinetuneSettings",
    "HeadTransfer",
    "ProtoNet",
    "SimpleShot",
    "build_fewshot_net",
    "build_method",
    "evaluate_episodes",
    "load_episodes",
    "mean_and_interval",
    "sample_episodes",
    "save_episodes",
    "scan_class_folders",
    "split_classes",
]
