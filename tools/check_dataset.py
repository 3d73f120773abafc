"""Check a COCO detection dataset (the same check train_det.py runs before training).

Example:
    python tools/check_dataset.py DATA/annotations.json DATA/images   # DATA=../shared/data/raccoon/train
    python tools/check_dataset.py ann.json images/ --policy drop --write-clean clean.json
Exit code 0 when clean (or repaired by --policy drop/clip), 1 when problems remain, 2 for unusable input.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from tasks.detection.data_check import (
    FATAL_PROBLEMS,
    POLICIES,
    apply_policy,
    check_coco,
    load_coco_json,
)
from tasks.engine.cli import exits_on_user_error


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", help="COCO JSON file")
    parser.add_argument("images", help="folder the file_name entries are relative to")
    parser.add_argument("--policy", choices=POLICIES, default="fail", help="what to do with problems")
    parser.add_argument("--no-files", action="store_true", help="skip opening the image files")
    parser.add_argument("--box-tolerance", type=float, default=1.0, help="pixels a box may pass the border")
    parser.add_argument("--write-clean", default=None, help="write the repaired JSON here (drop/clip)")
    args = parser.parse_args(argv)
    data = load_coco_json(args.annotations)
    problems = check_coco(data, args.images, check_files=not args.no_files, box_tolerance=args.box_tolerance)
    print(
        f"{args.annotations}: {len(data['images'])} images, {len(data['annotations'])} annotations, "
        f"{len(data['categories'])} categories"
    )
    for problem in problems:
        print(f"  {problem}")
    counts = Counter(p.kind for p in problems)
    print("problems: " + (", ".join(f"{k}={n}" for k, n in sorted(counts.items())) if problems else "none"))
    if not problems:
        return 0
    if args.policy == "fail" or any(p.kind in FATAL_PROBLEMS for p in problems):
        return 1
    clean, actions = apply_policy(data, problems, args.policy, source=args.annotations)
    for action in actions:
        print(f"  {action}")
    n_images, n_anns = len(clean["images"]), len(clean["annotations"])
    print(f"after --policy {args.policy}: {n_images} images, {n_anns} annotations")
    if args.write_clean:
        Path(args.write_clean).write_text(json.dumps(clean))
        print(f"wrote {args.write_clean}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
