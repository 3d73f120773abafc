"""Which class each detector label means: a checkpoint's label order against the data's categories.

Labels 1..K are assigned by ascending category id, but ids are arbitrary numbers (``voc_to_coco`` numbers
classes in the order it is given, other converters differently), so the same classes can come with other
ids. A checkpoint records its classes in label order (`checkpoint_meta`); before evaluating or resuming,
the data's categories are put in that order, matched by name, so that label k means the same class on
both sides instead of being silently permuted.
"""

from __future__ import annotations

import logging

from tasks.common.classes import class_mismatch_hint

from .data import CategoryMap
from .data_check import DatasetError

log = logging.getLogger("tasks.detection")

PURPOSES = ("resume", "eval", "weights")


def meta_from_map(cmap: CategoryMap) -> dict:
    """The checkpoint meta of a label map: category ids and names, both in label order."""
    return {"category_ids": list(cmap.cat_ids), "class_names": list(cmap.names)}


def map_from_meta(meta: dict, source: str) -> CategoryMap | None:
    """The label map a checkpoint was trained with, or None for checkpoints that do not record it."""
    ids, names = meta.get("category_ids"), meta.get("class_names")
    if not ids:
        return None
    names = names or [str(c) for c in ids]
    if len(names) != len(ids):
        raise DatasetError(f"{source}: task_meta has {len(ids)} category_ids but {len(names)} class_names")
    return CategoryMap([{"id": c, "name": n} for c, n in zip(ids, names, strict=True)], keep_order=True)


def _unique(names: list[str]) -> bool:
    return len(set(names)) == len(names)


def match_label_order(data: CategoryMap, wanted: CategoryMap) -> CategoryMap | None:
    """The data's categories in ``wanted``'s label order, or None when they are not the same classes.

    Classes are matched by name (what a label means; ids differ between converters) when the names are
    unique on both sides, else by id and name together.
    """
    if _unique(data.names) and _unique(wanted.names):
        if sorted(data.names) != sorted(wanted.names):
            return None
        id_of = dict(zip(data.names, data.cat_ids, strict=True))
        return CategoryMap([{"id": id_of[n], "name": n} for n in wanted.names], keep_order=True)
    pairs = sorted(zip(data.cat_ids, data.names, strict=True), key=repr)
    if pairs != sorted(zip(wanted.cat_ids, wanted.names, strict=True), key=repr):
        return None
    return CategoryMap(wanted.categories(), keep_order=True)


def align_with_checkpoint(
    data: CategoryMap, wanted: CategoryMap, *, source: str, purpose: str, ann_file: str
) -> CategoryMap:
    """The label map to use given a checkpoint's classes ``wanted``.

    Args:
        data: the data's own map (ascending ids).
        wanted: the checkpoint's map (its label order).
        source: the checkpoint, for messages.
        purpose: "resume" or "eval" (the labels must mean the checkpoint's classes: same classes in
            another order adopt the checkpoint's order, other classes are an error) or "weights"
            (initialisation only: differences are logged and the data's own order is kept).
        ann_file: the annotation file the data's classes come from, for messages.

    Raises:
        DatasetError: for "resume"/"eval" when the classes differ; the message lists both.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    aligned = match_label_order(data, wanted)
    if purpose == "weights":
        if aligned is None:
            log.warning(
                "%s was trained on the classes %s, %s defines %s: its class-specific layers are only a "
                "starting point",
                source,
                wanted.describe(),
                ann_file,
                data.describe(),
            )
        elif aligned.categories() != data.categories():
            log.warning(
                "%s was trained on the same classes in another label order (%s; here %s): its "
                "class-specific layers start permuted",
                source,
                wanted.describe(),
                data.describe(),
            )
        return data
    if aligned is None:
        hint = class_mismatch_hint(purpose, source, "rename the categories")
        raise DatasetError(
            f"{ann_file} defines the classes {data.describe()} but {source} was trained on "
            f"{wanted.describe()} (label order): {hint}"
        )
    if aligned.categories() != data.categories():
        log.info(
            "%s lists the classes of %s in another order or with other ids: using the checkpoint's label "
            "order %s (the data's own would be %s)",
            ann_file,
            source,
            aligned.describe(),
            data.describe(),
        )
    return aligned
