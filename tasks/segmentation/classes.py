"""Which class each output channel means: a checkpoint's classes against the data's class map.

A checkpoint records its class names in class-index order and the mask value map it was trained with
(`spec_meta`). Before evaluating or resuming, the data's dataset spec is put in the checkpoint's class
order, matched by name, so that class k means the same thing on both sides instead of being silently
permuted; the value map is composed accordingly (raw mask value -> data class -> checkpoint index).
"""

from __future__ import annotations

import dataclasses
import logging

from tasks.common.classes import class_mismatch_hint

from .image_io import SegmentationDataError
from .manifest import DatasetSpec

log = logging.getLogger("tasks.segmentation")

PURPOSES = ("resume", "eval", "weights")


def spec_meta(spec: DatasetSpec) -> dict:
    """The checkpoint meta of a dataset spec: class names by index and the raw mask value -> class map.

    The map is a list of ``[raw value, class index]`` pairs: JSON (which the meta must survive) has no
    integer keys.
    """
    return {
        "class_names": list(spec.class_names),
        "value_map": [[int(v), int(c)] for v, c in sorted(spec.lookup().items())],
    }


def meta_value_map(meta: dict) -> dict[int, int]:
    """The raw value -> class index map of a checkpoint meta ({} when it has none)."""
    raw = meta.get("value_map") or []
    items = raw.items() if isinstance(raw, dict) else raw
    return {int(v): int(c) for v, c in items}


def _reorder(spec: DatasetSpec, names: list[str]) -> DatasetSpec:
    """``spec`` with its classes renumbered to the order of ``names`` (the same set)."""
    index = {name: i for i, name in enumerate(names)}
    value_map = {v: index[spec.class_names[c]] for v, c in spec.lookup().items()}
    return dataclasses.replace(spec, class_names=list(names), value_map=value_map)


def align_spec(spec: DatasetSpec, meta: dict, *, source: str, purpose: str, where: str | None) -> DatasetSpec:
    """The dataset spec to use given a checkpoint's meta.

    Args:
        spec: the data's spec (from the manifest or the data config).
        meta: the checkpoint's ``task_meta`` (``class_names`` and ``value_map``).
        source: the checkpoint, for messages.
        purpose: "resume" or "eval" (class k must mean the checkpoint's class k: the same names in another
            order adopt the checkpoint's order, other names are an error) or "weights" (initialisation:
            differences are only logged).
        where: where the data's class names come from, for messages (the manifest or data.class_names);
            None when the data does not name its classes (default names class0..): the checkpoint's
            names are taken, there is nothing to compare.

    Raises:
        SegmentationDataError: for "resume"/"eval" when the class names differ; the message lists both.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    names = [str(n) for n in meta.get("class_names") or []]
    if not names:
        return spec
    if names == spec.class_names:
        recorded = meta_value_map(meta)
        if recorded and recorded != spec.lookup():
            # Legitimate (e.g. masks saved as 0/1 instead of 0/255), but worth a line when metrics surprise.
            log.info(
                "the masks encode the classes with other values than %s was trained on (%s there, %s here)",
                source,
                recorded,
                spec.lookup(),
            )
        return spec
    same_set = sorted(names) == sorted(spec.class_names) and len(set(names)) == len(names)
    if purpose == "weights":
        log.warning(
            "%s was trained on the classes %s (by index), the data has %s: %s",
            source,
            names,
            spec.class_names,
            "its output channels start permuted" if same_set else "its output layer is only a starting point",
        )
        return spec
    if where is None and len(names) == spec.num_classes:
        log.info("the data does not name its classes: using the names of %s, %s", source, names)
        return dataclasses.replace(spec, class_names=names)
    if not same_set:
        hint = class_mismatch_hint(purpose, source, "data.class_names or the manifest's labels")
        raise SegmentationDataError(
            f"the classes {spec.class_names} of {where or 'the data'} differ from those {source} was "
            f"trained on {names} "
            f"(by class index): {hint}"
        )
    aligned = _reorder(spec, names)
    log.info(
        "%s lists the classes of %s in another order (%s): using the checkpoint's order %s, "
        "mask values -> classes %s",
        where,
        source,
        spec.class_names,
        names,
        dict(sorted(aligned.value_map.items())),
    )
    return aligned
