"""Image classification on top of the shared engine: datasets, model head, metrics and the Task."""

from .config import ClsConfig, ClsDataConfig, ClsModelConfig
from .datasets import DataError, ImageListDataset, scan_image_folder, stratified_split
from .images import CorruptImageError, load_image, to_rgb
from .model import ClassificationHead, CosineLinear, ImageClassifier, build_classifier
from .task import ClassificationTask

__all__ = [
    "ClassificationHead",
    "ClassificationTask",
    "ClsConfig",
    "ClsDataConfig",
    "ClsModelConfig",
    "CorruptImageError",
    "CosineLinear",
    "DataError",
    "ImageClassifier",
    "ImageListDataset",
    "build_classifier",
    "load_image",
    "scan_image_folder",
    "stratified_split",
    "to_rgb",
]
