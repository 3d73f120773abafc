"""Image classification on top of the shared engine: datasets, model head, metrics and the Task."""

from .config import ClassificationConfig, ClassificationDataConfig, ClassificationModelConfig
from .data import DataError, ImageListDataset, scan_image_folder, stratified_split
from .model import ClassificationHead, CosineLinear, ImageClassifier, build_classifier
from .task import ClassificationTask

__all__ = [
    "ClassificationHead",
    "ClassificationTask",
    "ClassificationConfig",
    "ClassificationDataConfig",
    "ClassificationModelConfig",
    "CosineLinear",
    "DataError",
    "ImageClassifier",
    "ImageListDataset",
    "build_classifier",
    "scan_image_folder",
    "stratified_split",
]
