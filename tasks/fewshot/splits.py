"""Seeded class-level base / val / novel splits (no class is in two parts: that is what few-shot tests)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from .data import ClassFolderIndex, FewShotDataError

SPLIT_NAMES = ("base", "val", "novel")


def _counts(total: int, fractions: Sequence[float]) -> list[int]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise FewShotDataError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    base = int(round(total * fractions[0]))
    val = int(round(total * fractions[1]))
    return [base, val, total - base - val]


def split_classes(
    index: ClassFolderIndex, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0, by: str = "class"
) -> dict[str, list[str]]:
    """Split the classes of `index` into base / val / novel with a seeded permutation.

    Args:
        index: the dataset.
        fractions: shares of base, val and novel (of classes, or of groups when `by="group"`).
        seed: permutation seed; the same seed and class list give the same split on every machine.
        by: "class" shuffles classes; "group" keeps each group (e.g. an Omniglot alphabet) in one part.

    Returns:
        {"base": [...], "val": [...], "novel": [...]} of class names, each sorted.
    """
    if by not in ("class", "group"):
        raise FewShotDataError(f"split by must be 'class' or 'group', got {by!r}")
    rng = np.random.default_rng(seed)
    units = sorted(set(index.groups)) if by == "group" else list(index.class_names)
    if by == "group" and len(units) < 2:
        raise FewShotDataError(f"split by group needs >= 2 groups, {index.root} has {len(units)}")
    order = [units[i] for i in rng.permutation(len(units))]
    counts = _counts(len(units), fractions)
    parts, start = {}, 0
    for name, count in zip(SPLIT_NAMES, counts):
        chosen = set(order[start : start + count])
        start += count
        if by == "group":
            parts[name] = sorted(c for c, g in zip(index.class_names, index.groups) if g in chosen)
        else:
            parts[name] = sorted(chosen)
    return parts


def save_split(path: str | os.PathLike, split: dict[str, list[str]], meta: dict | None = None) -> None:
    """Write a split (and how it was made) as JSON."""
    with open(path, "w") as handle:
        json.dump({"meta": meta or {}, **{k: split[k] for k in SPLIT_NAMES}}, handle, indent=1)


def load_split(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a split written by `save_split`; a missing part is an error naming the file."""
    with open(path) as handle:
        data = json.load(handle)
    missing = [k for k in SPLIT_NAMES if k not in data]
    if missing:
        raise FewShotDataError(f"split file {path} lacks {missing}; expected keys {list(SPLIT_NAMES)}")
    return {k: list(data[k]) for k in SPLIT_NAMES}
