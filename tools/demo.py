"""`make demo`: the main job. Until the task demos land, a tour of the backbone family."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import demo_backbone  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return demo_backbone.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
