"""Classification metrics from logits: top-k accuracy, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose label is among the k highest logits (k capped at the class count)."""
    num_classes = logits.shape[1]
    top = logits.topk(min(max(ks), num_classes), dim=1).indices
    hits = top == labels[:, None]
    return {k: float(hits[:, : min(k, num_classes)].any(dim=1).float().mean()) for k in ks}


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """C[i, j] = number of samples of true class i predicted as j."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def precision_recall(cm: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class precision and recall from a confusion matrix (0 where undefined, as sklearn's default)."""
    cm = cm.double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    return precision, recall


def plot_confusion_matrix(cm: Tensor, classes: Sequence[str], path: str | Path, title: str = "") -> None:
    """Save the row-normalised confusion matrix as a PNG (counts printed for up to 20 classes)."""
    from matplotlib.figure import Figure  # object API: no pyplot/GUI state, fast import

    n = len(classes)
    norm = cm.double() / cm.sum(1, keepdim=True).clamp(min=1)
    size = min(2 + 0.45 * n, 20)
    fig = Figure(figsize=(size + 1, size), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if n <= 50:
        ax.set_xticks(range(n), classes, rotation=90 if n > 6 else 0)
        ax.set_yticks(range(n), classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
