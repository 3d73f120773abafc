"""Value checks for config sections, shared by every task's `validation.py`.

The config loader checks types; these check values of the right type that a library would reject only at
the first batch (after the run folder exists, with a traceback that does not name the key) or that would
silently train something else. Every error names the dotted key, the value as the user wrote it and what
was expected: `data.std=[0, 0, 0]: every value must be > 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .config import ConfigError


def show(value: object) -> str:
    """A value as the user wrote it: 0.0 as 0, lists item by item."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def invalid(key: str, value: object, expected: str) -> ConfigError:
    """The error for one bad value (raise it)."""
    return ConfigError(f"{key}={show(value)}: {expected}", key)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_one_of(key: str, value: object, allowed: Sequence) -> None:
    if value not in allowed:
        raise invalid(key, value, f"expected one of {list(allowed)}")


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "",
) -> None:
    """Require a finite number within [low, high] (either end open, or absent, on request)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if is_number(value) and not too_low and not too_high:
        return
    if high is None:
        expected = f"must be {'>' if low_open else '>='} {show(low)}"
    elif low is None:
        expected = f"must be {'<' if high_open else '<='} {show(high)}"
    else:
        expected = (
            f"must be in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"
        )
    raise invalid(key, value, f"{expected} ({what})" if what else expected)


def check_positive(key: str, value: float) -> None:
    check_range(key, value, 0, low_open=True)


def check_unit(key: str, value: float, what: str = "a probability") -> None:
    check_range(key, value, 0, 1, what=what)


def check_all_positive(key: str, values: Sequence[float], what: str = "value") -> None:
    """A non-empty list whose every entry is a finite number > 0."""
    if not values:
        raise invalid(key, list(values), f"must list at least one {what}")
    if not all(is_number(v) and v > 0 for v in values):
        raise invalid(key, list(values), "every value must be > 0")
