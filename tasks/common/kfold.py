"""K-fold splits of a dataset's units (cases, or images), seeded, and their `splits.json` file.

A *unit* is what must never be on both sides of a split: a case (patient, volume) in segmentation, an
image in classification. Folds are made once from the sorted unit ids and the seed, written to
`splits.json` (nnU-Net's `splits_final.json`: one ``{"train": [...], "val": [...]}`` entry per fold) and
read back by every fold's run, so the folds stay fixed even if the listing order of the files changes.

sklearn is not a dependency; its `KFold(shuffle=True)` / `StratifiedKFold(shuffle=True)` semantics take
a few lines: every unit is in exactly one validation fold, fold sizes differ by at most one, and with
strata (class labels) every class is spread over the folds as evenly as its count allows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backbones.errors import UserError

SPLITS_VERSION = 1


class FoldError(UserError):
    """A fold setting or a splits file that does not fit the data; the message names the key or file."""


@dataclass(frozen=True)
class FoldUnits:
    """What k-fold splits: unique unit ids and, optionally, the stratum (class) of each one."""

    kind: str  # "case" or "image": what one id is, for messages and splits.json
    ids: tuple[str, ...]
    strata: tuple[int, ...] | None = None  # one per id: folds keep the class proportions

    def __post_init__(self) -> None:
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("FoldUnits.ids must be unique")
        if self.strata is not None and len(self.strata) != len(self.ids):
            raise ValueError("FoldUnits.strata needs one value per id")


@dataclass(frozen=True)
class Splits:
    """The validation units of each fold; a fold trains on every other unit."""

    kind: str
    seed: int
    folds: tuple[tuple[str, ...], ...]  # validation ids of fold 0, 1, ...

    @property
    def num_folds(self) -> int:
        return len(self.folds)

    def val(self, fold: int) -> set[str]:
        return set(self.folds[fold])

    def train(self, fold: int) -> set[str]:
        return {unit for i, ids in enumerate(self.folds) if i != fold for unit in ids}

    def to_json(self) -> dict:
        """nnU-Net's list of ``{"train", "val"}`` entries, with what made them."""
        return {
            "version": SPLITS_VERSION,
            "unit": self.kind,
            "num_folds": self.num_folds,
            "seed": self.seed,
            "folds": [
                {"train": sorted(self.train(i)), "val": sorted(ids)} for i, ids in enumerate(self.folds)
            ],
        }


def check_num_folds(num_folds: int, units: FoldUnits | None = None, setting: str = "") -> None:
    """At least 2 folds, and no more folds than units (every validation fold needs one).

    Args:
        setting: how the user gave the value, for the message (default ``data.num_folds=<k>``).

    Raises:
        FoldError: naming the setting and the number of units.
    """
    setting = setting or f"data.num_folds={num_folds}"
    if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2:
        raise FoldError(f"{setting}: k-fold cross-validation needs at least 2 folds")
    if units is not None and num_folds > len(units.ids):
        raise FoldError(
            f"{setting}: the data has only {len(units.ids)} {units.kind}(s), and every fold needs "
            f"at least one to validate on; use at most {len(units.ids)} folds or add data"
        )


def check_fold(fold: int, num_folds: int) -> None:
    """`data.fold` names one of the folds 0..num_folds-1."""
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < num_folds:
        raise FoldError(f"data.fold={fold}: expected 0..{num_folds - 1} (data.num_folds={num_folds})")


def make_folds(units: FoldUnits, num_folds: int, seed: int) -> Splits:
    """Seeded k-fold split of `units` (stratified when they carry strata).

    The ids are sorted first, so the folds depend only on the set of ids and the seed. Each stratum (all
    ids when there are none) is shuffled, the strata are concatenated, and the ids are dealt to the folds in
    turn: fold sizes differ by at most one overall and within every stratum.

    Raises:
        FoldError: fewer than 2 folds, or more folds than units.
    """
    check_num_folds(num_folds, units)
    stratum = dict(zip(units.ids, units.strata)) if units.strata is not None else {}
    groups: dict[int, list[str]] = {}
    for unit in sorted(units.ids):
        groups.setdefault(stratum.get(unit, 0), []).append(unit)
    rng = np.random.default_rng(seed)
    dealt: list[str] = []
    for key in sorted(groups):
        dealt += [groups[key][i] for i in rng.permutation(len(groups[key]))]
    folds = [sorted(dealt[k::num_folds]) for k in range(num_folds)]
    return Splits(units.kind, seed, tuple(tuple(f) for f in folds))


# ------------------------------------------------------------------------------------------ the file


def write_splits(path: str | Path, splits: Splits) -> None:
    """Write `splits.json` atomically (a kill leaves the old file or the new one, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(splits.to_json(), indent=2))
    tmp.replace(path)


def read_splits(path: str | Path) -> Splits:
    """Read a `splits.json` written by `write_splits`.

    Raises:
        FoldError: a missing or malformed file, or one whose validation folds overlap.
    """
    path = Path(path)
    if not path.is_file():
        raise FoldError(f"data.splits_file={str(path)!r}: file not found")
    try:
        data = json.loads(path.read_text())
        folds = tuple(tuple(str(unit) for unit in entry["val"]) for entry in data["folds"])
        splits = Splits(str(data["unit"]), int(data["seed"]), folds)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise FoldError(
            f"{path}: not a splits file ({err!r}); expected {{'unit', 'seed', 'folds': [{{'train', 'val'}}]}}"
        ) from None
    seen: dict[str, int] = {}
    for fold, ids in enumerate(splits.folds):
        for unit in ids:
            if unit in seen:
                raise FoldError(
                    f"{path}: {unit!r} is in the validation sets of folds {seen[unit]} and {fold}"
                )
            seen[unit] = fold
    return splits


def _listed(ids: set[str]) -> str:
    shown = sorted(ids)[:5]
    return ", ".join(shown) + (f" ... ({len(ids)} in all)" if len(ids) > 5 else "")


def check_splits(splits: Splits, units: FoldUnits, num_folds: int, seed: int, source: str | Path) -> None:
    """Refuse a splits file made with other settings or for other data than this run's.

    Reusing the file is the point (every fold of a cross-validation sees the same folds), so a mismatch is
    an error, never a silent re-split: folds already trained would have seen other validation units.

    Raises:
        FoldError: naming the file and what differs.
    """
    fix = "delete it to make new folds (and retrain every fold), or use another output folder"
    if splits.kind != units.kind:
        raise FoldError(f"{source} splits {splits.kind}s, this data is split by {units.kind}; {fix}")
    if splits.num_folds != num_folds or splits.seed != seed:
        raise FoldError(
            f"{source} holds {splits.num_folds} folds made with seed {splits.seed}, this run asks for "
            f"{num_folds} folds with seed {seed} (data.split_seed); {fix}"
        )
    listed = {unit for ids in splits.folds for unit in ids}
    missing, extra = set(units.ids) - listed, listed - set(units.ids)
    if missing or extra:
        parts = [f"{len(listed)} {splits.kind}(s) in the file, {len(units.ids)} in the data"]
        if missing:
            parts.append(f"not in the file: {_listed(missing)}")
        if extra:
            parts.append(f"gone from the data: {_listed(extra)}")
        raise FoldError(f"{source} was made for other data ({'; '.join(parts)}); {fix}")


def held_out(units: FoldUnits, num_folds: int, fold: int, seed: int, splits_file: str = "") -> set[str]:
    """The validation units of fold `fold`: from `splits_file` when set (checked against `units`), else
    from `make_folds(units, num_folds, seed)`.

    Raises:
        FoldError: bad `num_folds`/`fold`, or a splits file that does not fit (see `check_splits`).
    """
    check_num_folds(num_folds, units)
    check_fold(fold, num_folds)
    if splits_file:
        splits = read_splits(splits_file)
        check_splits(splits, units, num_folds, seed, splits_file)
    else:
        splits = make_folds(units, num_folds, seed)
    return splits.val(fold)


def unique_units(kind: str, ids: Sequence[str], strata: Sequence[int] | None = None) -> FoldUnits:
    """`FoldUnits` of possibly repeated ids (a case's many images): each id once, with its first stratum."""
    first: dict[str, int | None] = {}
    for i, unit in enumerate(ids):
        first.setdefault(unit, None if strata is None else int(strata[i]))
    order = tuple(sorted(first))
    return FoldUnits(kind, order, None if strata is None else tuple(first[u] for u in order))
