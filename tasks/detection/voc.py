"""Pascal VOC XML annotations -> COCO detection dictionary."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from tasks.common.files import visible_children
from tasks.common.images import check_image

from .data_check import DatasetError

DIFFICULT_MODES = ("ignore", "keep", "drop")


def _text(node: ET.Element, tag: str, xml_path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DatasetError(f"{str(xml_path)!r}: missing <{tag}> inside <{node.tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml_path: Path) -> float:
    text = _text(node, tag, xml_path)
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{str(xml_path)!r}: <{tag}> must be a number, got {text!r}") from None


def voc_to_coco(
    xml_dir: str | Path,
    *,
    image_dir: str | Path | None = None,
    classes: Sequence[str] | None = None,
    difficult: str = "ignore",
    one_based: bool = False,
) -> dict:
    """Convert a folder of Pascal VOC XML files into one COCO dictionary.

    Args:
        xml_dir: folder with ``*.xml`` files (one per image).
        image_dir: folder with the images; used to read the size when ``<size>`` is absent or zero.
        classes: class names in label order (ids 1..K); default: every name found, sorted.
        difficult: ``ignore`` writes difficult objects with ``iscrowd=1`` so COCOeval neither rewards nor
            penalises them (as the VOC metric does); ``keep`` treats them as normal boxes; ``drop`` omits
            them.
        one_based: subtract 1 from xmin/ymin (the official VOC sets use 1-based inclusive pixel indices,
            as detectron2 assumes); off by default, where the box is [xmin, ymin, xmax - xmin, ymax - ymin].

    Returns:
        A COCO dictionary with ``images``, ``annotations`` and ``categories``.
    """
    if difficult not in DIFFICULT_MODES:
        raise DatasetError(f"difficult must be one of {DIFFICULT_MODES}, got {difficult!r}")
    xml_dir = Path(xml_dir)
    # Junk such as macOS `._name.xml` resource forks ends in .xml too but is not VOC XML.
    children = visible_children(xml_dir) if xml_dir.is_dir() else []
    files = [p for p in children if p.suffix.lower() == ".xml" and p.is_file()]
    if not files:
        raise DatasetError(f"no .xml files in {str(xml_dir)!r}")

    parsed = []
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            raise DatasetError(f"{str(path)!r} is not valid XML: {e}") from e
        parsed.append((path, root))

    names = sorted({_text(obj, "name", p) for p, root in parsed for obj in root.iter("object")})
    if classes is None:
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DatasetError(f"object names {unknown} are not in the given classes {list(classes)}")
    cat_id = {name: i + 1 for i, name in enumerate(classes)}

    images, annotations = [], []
    offset = 1.0 if one_based else 0.0
    for image_id, (path, root) in enumerate(parsed, start=1):
        file_name = _text(root, "filename", path)
        size = root.find("size")
        width = (
            int(_number(size, "width", path)) if size is not None and size.find("width") is not None else 0
        )
        height = (
            int(_number(size, "height", path)) if size is not None and size.find("height") is not None else 0
        )
        if (width <= 0 or height <= 0) and image_dir is not None:
            header = check_image(Path(image_dir) / file_name)  # the displayed size, as boxes are drawn
            width, height = header.width, header.height
        if width <= 0 or height <= 0:
            raise DatasetError(f"{str(path)!r}: no usable <size>; pass image_dir to read it from the image")
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in root.iter("object"):
            is_difficult = obj.find("difficult") is not None and _text(obj, "difficult", path) == "1"
            if is_difficult and difficult == "drop":
                continue
            box = obj.find("bndbox")
            if box is None:
                raise DatasetError(f"{str(path)!r}: <object> without <bndbox>")
            x0 = _number(box, "xmin", path) - offset
            y0 = _number(box, "ymin", path) - offset
            x1, y1 = _number(box, "xmax", path), _number(box, "ymax", path)
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_id[_text(obj, "name", path)],
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": int(is_difficult and difficult == "ignore"),
                }
            )
    categories = [{"id": cat_id[name], "name": name} for name in classes]
    return {"images": images, "annotations": annotations, "categories": categories}
