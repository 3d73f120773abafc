"""Predict segmentation masks for a folder of images with a trained U-Net.

    python tools/predict_seg.py runs/segmentation/checkpoints/best.pt IMAGES_DIR OUT_DIR [--tile 512 512]
        [--tta hflip vflip]      # test-time augmentation (default: the run's eval.tta)

Writes OUT_DIR/<stem>.png (mask values as in the training masks, e.g. 0/255) and OUT_DIR/overlays/<stem>.png;
single-channel NIfTI volumes (.nii/.nii.gz) in the folder become OUT_DIR/<stem>.nii.gz label volumes.
"""

from __future__ import annotations

import argparse

from tasks.common.tta import add_tta_argument, tta_from_cli
from tasks.engine.cli import exits_on_user_error
from tasks.segmentation.predict import predict_folder


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Folder of images -> PNG masks (+ overlays).")
    parser.add_argument(
        "checkpoint",
        help="checkpoint written by tools/train_seg.py (best.pt / last.pt), or the output folder of "
        "tools/train_cv.py (every fold's best.pt, probabilities averaged)",
    )
    parser.add_argument("input_dir", help="folder of PNG/JPG/TIFF/BMP images")
    parser.add_argument("output_dir", help="where masks and overlays/ go")
    parser.add_argument(
        "--tile",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="sliding-window tile size (default: the run's eval.tile_size)",
    )
    parser.add_argument("--no-overlays", action="store_true", help="write masks only")
    parser.add_argument("--device", default="cpu")
    add_tta_argument(parser)
    args = parser.parse_args(argv)
    written = predict_folder(
        args.checkpoint,
        args.input_dir,
        args.output_dir,
        args.tile,
        overlays=not args.no_overlays,
        device=args.device,
        tta=None if args.tta is None else tta_from_cli(args.tta, []),
    )
    print(f"wrote {len(written)} masks to {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
