"""Fixed-task mode: one user task given as folders -> predictions.csv (+ accuracy when queries are labelled).

support/            query/                 or   query/
  cat/ a.png b.png    img1.png img2.png          cat/ q1.png
  dog/ c.png d.png                               dog/ q2.png
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.common.files import visible_children
from tasks.common.images import is_image_file

from .data import FewShotDataError, check_image_headers, scan_class_folders


@dataclass(frozen=True)
class FixedTask:
    """A support set with class names and a query set, labelled (query class folders) or not."""

    class_names: tuple[str, ...]
    support_paths: tuple[Path, ...]
    support_labels: tuple[int, ...]
    query_paths: tuple[Path, ...]
    query_labels: tuple[int, ...] | None

    @property
    def n_way(self) -> int:
        return len(self.class_names)


def load_fixed_task(support_dir: str | os.PathLike, query_dir: str | os.PathLike) -> FixedTask:
    """Read and check a fixed task before any model work.

    Raises:
        FewShotDataError: a missing or empty support folder, an empty class folder, nested support classes,
            fewer than 2 classes, a query folder without images, a query class folder whose class is not
            in the support set, or an unreadable image; the message names the folder or file.
    """
    support_dir, query_dir = Path(support_dir), Path(query_dir)
    if not support_dir.is_dir():
        raise FewShotDataError(f"support folder {support_dir} does not exist")
    if not any(p.is_dir() for p in visible_children(support_dir)):
        raise FewShotDataError(
            f"support folder {support_dir} is empty: expected one sub-folder of images per class"
        )
    support = scan_class_folders(support_dir)
    if any(support.groups):
        raise FewShotDataError(
            f"support folder {support_dir} has nested classes ({support.class_names[0]!r}); "
            "expected support/<class>/<image>"
        )
    if support.num_classes < 2:
        raise FewShotDataError(f"support folder {support_dir} has {support.num_classes} class; need >= 2")
    samples = support.samples()
    names = support.class_names

    if not query_dir.is_dir():
        raise FewShotDataError(f"query folder {query_dir} does not exist")
    entries = visible_children(query_dir)  # `__MACOSX/`, `._*` and `.DS_Store` are never queries
    if any(p.is_dir() for p in entries):
        query = scan_class_folders(query_dir)
        unknown = [c for c in query.class_names if c not in names]
        if unknown:
            raise FewShotDataError(
                f"query class folder {query_dir / unknown[0]} names class {unknown[0]!r}, "
                f"which is not in the "
                f"support set {support_dir} (classes: {', '.join(names)})"
            )
        query_samples = [(p, names.index(query.class_names[c])) for p, c in query.samples()]
        query_paths = tuple(p for p, _ in query_samples)
        query_labels: tuple[int, ...] | None = tuple(label for _, label in query_samples)
    else:
        query_paths = tuple(p for p in entries if p.is_file() and is_image_file(p))
        query_labels = None
        if not query_paths:
            raise FewShotDataError(f"query folder {query_dir} has no images (and no class sub-folders)")
    check_image_headers([p for p, _ in samples] + list(query_paths))
    return FixedTask(
        names, tuple(p for p, _ in samples), tuple(c for _, c in samples), query_paths, query_labels
    )


def write_predictions(path: str | os.PathLike, task: FixedTask, logits: torch.Tensor) -> float | None:
    """Write predictions.csv (path, predicted class, score; true class and correct when labelled).

    Returns:
        Accuracy over the queries when they are labelled, else None.
    """
    probabilities = logits.float().softmax(dim=1)
    predicted = probabilities.argmax(dim=1)
    labelled = task.query_labels is not None
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "predicted", "probability"] + (["label", "correct"] if labelled else []))
        for row, query_path in enumerate(task.query_paths):
            cells = [
                str(query_path),
                task.class_names[predicted[row]],
                f"{probabilities[row, predicted[row]]:.6f}",
            ]
            if labelled:
                true = task.query_labels[row]
                cells += [task.class_names[true], int(predicted[row].item() == true)]
            writer.writerow(cells)
    if not labelled:
        return None
    return float((predicted == torch.tensor(task.query_labels)).float().mean())
