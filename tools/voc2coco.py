"""Convert a folder of Pascal VOC XML annotations into one COCO JSON file.

Example:
    python tools/voc2coco.py ../shared/data/raccoon/train/voc annotations.json
    python tools/voc2coco.py VOC2007/Annotations voc07.json --classes aeroplane bicycle ... --one-based
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.detection.voc import DIFFICULT_MODES, voc_to_coco
from tasks.engine.cli import exits_on_user_error


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml_dir", help="folder with one .xml per image")
    parser.add_argument("output", help="COCO JSON file to write")
    parser.add_argument("--images", default=None, help="image folder (to read sizes missing from the XML)")
    parser.add_argument(
        "--classes", nargs="+", default=None, help="class names in id order (default: sorted)"
    )
    parser.add_argument(
        "--difficult",
        choices=DIFFICULT_MODES,
        default="ignore",
        help="ignore: iscrowd=1 (not scored, as in VOC); keep; drop",
    )
    parser.add_argument("--one-based", action="store_true", help="subtract 1 from xmin/ymin (official VOC)")
    args = parser.parse_args(argv)
    data = voc_to_coco(
        args.xml_dir,
        image_dir=args.images,
        classes=args.classes,
        difficult=args.difficult,
        one_based=args.one_based,
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(data))
    print(
        f"{len(data['images'])} images, {len(data['annotations'])} boxes, "
        f"{len(data['categories'])} classes -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
