"""Which files in a user's data folder are data: one rule for every task's folder scanner.

Archives made on macOS carry `__MACOSX/` folders of AppleDouble `._name` files (which end in `.png` or
`.jpg` but are not images), `.DS_Store` files, and editors leave other hidden files; none of them is ever
a sample, a class or a case, so every scanner skips them before looking at extensions.
"""

from __future__ import annotations

from pathlib import Path

JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_junk(path: str | Path) -> bool:
    """True for hidden files or folders (`.name`, which covers `._*` and `.DS_Store`) and OS metadata."""
    name = Path(path).name
    return name.startswith(".") or name in JUNK_NAMES


def has_junk_part(path: str | Path, root: str | Path | None = None) -> bool:
    """True when `path`, or any folder between `root` and it, is junk (see `is_junk`)."""
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else path.parts
    return any(is_junk(part) for part in parts)


def visible_children(folder: str | Path) -> list[Path]:
    """The entries of `folder` that are not junk, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if not is_junk(p))
