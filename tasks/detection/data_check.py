"""Validation of COCO-format detection data before any training starts.

`check_coco` lists every problem with the image file name and annotation id; `apply_policy` then either
raises (``fail``, the default), drops what is broken (``drop``), or additionally clips boxes that stick
out of their image (``clip``). Problems that no policy can repair (duplicate image or category ids, a
JSON file without the three COCO lists) always raise.
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from backbones.errors import UserError
from tasks.common.images import ImageReadError, check_image

POLICIES = ("fail", "clip", "drop")

# Problems that make a whole image unusable (the image and its annotations are dropped).
IMAGE_PROBLEMS = ("missing_file", "unreadable_image", "bad_image_size", "size_mismatch")
# Problems that make one annotation unusable (only that annotation is dropped).
ANNOTATION_PROBLEMS = (
    "duplicate_annotation_id",
    "unknown_image",
    "unknown_category",
    "bad_bbox",
    "degenerate_bbox",
    "outside_image",
)
# Problems no policy repairs: which image or class an id means is ambiguous.
FATAL_PROBLEMS = ("bad_structure", "duplicate_image_id", "duplicate_category_id")


class DatasetError(UserError):
    """Raised when detection data fails its check; the message lists the problems found."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a COCO dataset.

    Attributes:
        kind: short identifier (see IMAGE_PROBLEMS / ANNOTATION_PROBLEMS / FATAL_PROBLEMS).
        message: human-readable explanation naming the offending value and what was expected.
        image_id: the image concerned, if any.
        annotation_id: the annotation concerned, if any.
        file_name: the image file concerned, if known.
    """

    kind: str
    message: str
    image_id: int | None = None
    annotation_id: int | None = None
    file_name: str | None = None

    def __str__(self) -> str:
        where = []
        if self.file_name is not None:
            where.append(f"file {self.file_name!r}")
        if self.image_id is not None:
            where.append(f"image id {self.image_id}")
        if self.annotation_id is not None:
            where.append(f"annotation id {self.annotation_id}")
        prefix = f"[{self.kind}] " + (", ".join(where) + ": " if where else "")
        return prefix + self.message


def load_coco_json(path: str | Path) -> dict:
    """Read a COCO annotation file, turning JSON or structure errors into a DatasetError.

    Args:
        path: the annotation JSON file.

    Returns:
        The parsed dictionary (with ``images``, ``annotations`` and ``categories`` lists).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"COCO annotation file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{str(path)!r} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{str(path)!r} is not UTF-8 text: {e}") from e
    structure = _structure_problems(data)
    if structure:
        raise DatasetError(f"{str(path)!r} is not a COCO detection file:\n" + "\n".join(map(str, structure)))
    return data


def _structure_problems(data: object) -> list[Problem]:
    if not isinstance(data, dict):
        return [
            Problem("bad_structure", f"expected a JSON object at the top level, got {type(data).__name__}")
        ]
    problems = []
    for key in ("images", "annotations", "categories"):
        if key not in data:
            problems.append(Problem("bad_structure", f"missing top-level key {key!r} (expected a list)"))
        elif not isinstance(data[key], list):
            problems.append(
                Problem("bad_structure", f"{key!r} must be a list, got {type(data[key]).__name__}")
            )
    if problems:
        return problems
    for key, fields in (
        ("images", ("id", "file_name")),
        ("annotations", ("id", "image_id", "category_id", "bbox")),
        ("categories", ("id", "name")),
    ):
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                problems.append(Problem("bad_structure", f"{key}[{i}] must be an object"))
                continue
            missing = [f for f in fields if f not in entry]
            if missing:
                problems.append(Problem("bad_structure", f"{key}[{i}] lacks required field(s) {missing}"))
    return problems


def check_coco(
    data: dict, image_root: str | Path | None, *, check_files: bool = True, box_tolerance: float = 1.0
) -> list[Problem]:
    """List the problems of a COCO detection dataset.

    Args:
        data: parsed COCO dictionary (see `load_coco_json`).
        image_root: folder the ``file_name`` entries are relative to; needed when ``check_files``.
        check_files: open every image header to check it exists, decodes and matches width/height.
        box_tolerance: pixels a box may extend past the image border before it counts as outside
            (boxes converted from 1-based VOC coordinates often end one pixel past the edge).

    Returns:
        The problems found, in file order (empty when the dataset is clean).
    """
    problems = _structure_problems(data)
    if problems:
        return problems

    for key, kind in (("images", "duplicate_image_id"), ("categories", "duplicate_category_id")):
        counts = Counter(entry["id"] for entry in data[key])
        for entry_id, n in counts.items():
            if n > 1:
                problems.append(
                    Problem(
                        kind,
                        f"id {entry_id} is used by {n} {key}; ids must be unique",
                        image_id=entry_id if key == "images" else None,
                    )
                )

    categories = {c["id"] for c in data["categories"]}
    images = {}
    for img in data["images"]:
        images[img["id"]] = img
        problems.extend(_image_problems(img, image_root, check_files))

    seen_ann_ids: set = set()
    for ann in data["annotations"]:
        ann_id = ann["id"]
        img = images.get(ann["image_id"])
        file_name = img["file_name"] if img is not None else None
        ctx = dict(image_id=ann["image_id"], annotation_id=ann_id, file_name=file_name)
        if ann_id in seen_ann_ids:
            problems.append(
                Problem("duplicate_annotation_id", "annotation id used twice; later copy ignored", **ctx)
            )
            continue
        seen_ann_ids.add(ann_id)
        if img is None:
            problems.append(Problem("unknown_image", f"image_id {ann['image_id']} is not in 'images'", **ctx))
            continue
        if ann["category_id"] not in categories:
            problems.append(
                Problem(
                    "unknown_category",
                    f"category_id {ann['category_id']!r} is not in "
                    f"'categories' (known ids: {sorted(categories)})",
                    **ctx,
                )
            )
            continue
        problems.extend(_box_problems(ann, img, box_tolerance, ctx))
    return problems


def _image_problems(img: dict, image_root: str | Path | None, check_files: bool) -> list[Problem]:
    ctx = dict(image_id=img["id"], file_name=img["file_name"])
    width, height = img.get("width"), img.get("height")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        return [
            Problem(
                "bad_image_size", f"width/height must be positive numbers, got {width!r}/{height!r}", **ctx
            )
        ]
    if not check_files:
        return []
    if image_root is None:
        raise ValueError("check_coco(check_files=True) needs image_root")
    path = Path(image_root) / img["file_name"]
    if not path.is_file():
        return [Problem("missing_file", f"image file {str(path)!r} does not exist", **ctx)]
    try:
        header = check_image(path)  # reads the header only: cheap even for large datasets
    except ImageReadError as e:
        return [Problem("unreadable_image", f"cannot decode {str(path)!r}: {e.reason}", **ctx)]
    # The size as displayed (EXIF orientation applied): the images are read upright and COCO boxes are
    # drawn on the upright image, as annotation tools show it.
    if (header.width, header.height) != (width, height):
        message = f"JSON says {width}x{height} but the file is {header.width}x{header.height}"
        if header.orientation != 1:
            stored = header.stored_size
            message += (
                f" as displayed (EXIF orientation {header.orientation} turns its stored {stored[0]}x"
                f"{stored[1]} pixels; width, height and boxes must describe the displayed image)"
            )
        return [Problem("size_mismatch", message, **ctx)]
    return []


def _box_problems(ann: dict, img: dict, tolerance: float, ctx: dict) -> list[Problem]:
    bbox = ann["bbox"]
    if (
        not isinstance(bbox, list | tuple)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
    ):
        return [Problem("bad_bbox", f"bbox must be 4 numbers [x, y, width, height], got {bbox!r}", **ctx)]
    if not all(math.isfinite(v) for v in bbox):
        return [Problem("bad_bbox", f"bbox contains NaN or infinity: {bbox!r}", **ctx)]
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return [Problem("degenerate_bbox", f"bbox width and height must be > 0, got {bbox!r}", **ctx)]
    width, height = img["width"], img["height"]
    if x < -tolerance or y < -tolerance or x + w > width + tolerance or y + h > height + tolerance:
        return [Problem("outside_image", f"bbox {bbox!r} extends outside the {width}x{height} image", **ctx)]
    return []


def apply_policy(
    data: dict,
    problems: list[Problem],
    policy: str = "fail",
    *,
    source: str = "dataset",
    max_listed: int = 20,
) -> tuple[dict, list[str]]:
    """Return a cleaned copy of ``data`` according to ``policy``.

    Boxes within the tolerance of the border are always clipped to the image (rounding, not an error).

    Args:
        data: parsed COCO dictionary (not modified).
        problems: output of `check_coco` for this data.
        policy: ``fail`` raises on any problem; ``drop`` removes broken images (with their annotations)
            and broken annotations; ``clip`` clips boxes outside the image to the border and drops the rest
            (and boxes that clip to nothing).
        source: name used in messages (usually the JSON path).
        max_listed: how many problems to list in an error message.

    Returns:
        (cleaned data, list of human-readable actions taken).
    """
    if policy not in POLICIES:
        raise ValueError(f"data check policy must be one of {POLICIES}, got {policy!r}")
    fatal = [p for p in problems if p.kind in FATAL_PROBLEMS]
    if fatal or (problems and policy == "fail"):
        shown = fatal or problems
        lines = [str(p) for p in shown[:max_listed]]
        if len(shown) > max_listed:
            lines.append(f"... and {len(shown) - max_listed} more")
        hint = (
            "no policy can repair these"
            if fatal
            else "fix the data, or set data.check_policy=drop (or clip) to skip the broken entries"
        )
        raise DatasetError(f"{source}: {len(shown)} problem(s) found ({hint}):\n" + "\n".join(lines))

    bad_images = {p.image_id for p in problems if p.kind in IMAGE_PROBLEMS}
    # Duplicate annotation ids keep their first copy (dropped below by the `seen` set), so they are not
    # added to bad_anns, which would drop the first copy too.
    dropped_kinds = set(ANNOTATION_PROBLEMS) - {"duplicate_annotation_id"}
    if policy == "clip":
        dropped_kinds.discard("outside_image")
    bad_anns = {p.annotation_id for p in problems if p.kind in dropped_kinds}
    actions = [
        f"dropped {p}"
        for p in problems
        if p.kind in IMAGE_PROBLEMS or p.kind in dropped_kinds or p.kind == "duplicate_annotation_id"
    ]

    out = copy.deepcopy(data)
    out["images"] = [img for img in out["images"] if img["id"] not in bad_images]
    sizes = {img["id"]: (img["width"], img["height"]) for img in out["images"]}
    kept, seen = [], set()
    for ann in out["annotations"]:
        if ann["id"] in seen or ann["id"] in bad_anns or ann["image_id"] not in sizes:
            continue  # duplicates keep their first copy; annotations of dropped images go with them
        seen.add(ann["id"])
        clipped = _clip_xywh(ann["bbox"], *sizes[ann["image_id"]])
        if clipped is None:
            actions.append(f"dropped annotation id {ann['id']}: bbox {ann['bbox']} is empty after clipping")
            continue
        if clipped != list(ann["bbox"]) and policy == "clip":
            actions.append(f"clipped annotation id {ann['id']}: {ann['bbox']} -> {clipped}")
        ann["bbox"] = clipped
        kept.append(ann)
    out["annotations"] = kept
    return out, actions


def _clip_xywh(bbox: list[float], width: float, height: float) -> list[float] | None:
    x0, y0 = max(0.0, float(bbox[0])), max(0.0, float(bbox[1]))
    x1, y1 = min(float(width), bbox[0] + bbox[2]), min(float(height), bbox[1] + bbox[3])
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def load_and_check(
    ann_file: str | Path,
    image_root: str | Path,
    policy: str = "fail",
    *,
    check_files: bool = True,
    box_tolerance: float = 1.0,
) -> tuple[dict, list[str]]:
    """Load a COCO file, check it and apply the policy; the one call the dataset builder makes.

    Returns:
        (clean COCO dictionary, actions taken by the policy).
    """
    data = load_coco_json(ann_file)
    problems = check_coco(data, image_root, check_files=check_files, box_tolerance=box_tolerance)
    return apply_policy(data, problems, policy, source=str(ann_file))
