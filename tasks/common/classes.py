"""The advice every task gives when a checkpoint's classes are not the data's."""

from __future__ import annotations


def class_mismatch_hint(purpose: str, source: str, how_to_rename: str) -> str:
    """What to do instead: resume on the original data, or evaluate on renamed classes / fine-tune first.

    Args:
        purpose: "resume" or "eval".
        source: the checkpoint path, for the --weights suggestion.
        how_to_rename: where this task's class names come from (shown in parentheses).
    """
    if purpose == "resume":
        return f"resume on the data it was trained on, or start a new run from it with --weights {source}"
    return (
        f"evaluate it on data with the same class names ({how_to_rename}), or fine-tune it on these "
        f"classes first with --weights {source}"
    )
