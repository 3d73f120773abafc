"""experiments/omniglot_protocol.py: a held-out group never reaches training, runs are well-formed tasks."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from tasks.fewshot.fixed_task import load_fixed_task

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "omniglot_protocol.py"


def _protocol_main(argv: list[str]) -> int:
    return runpy.run_path(str(SCRIPT))["main"](argv)  # experiments/ is a folder of scripts, not a package


def test_make_holds_out_one_group_and_writes_fixed_tasks(tmp_path, make_tree):
    root = make_tree(tmp_path / "data", groups=3, classes=5, images=6)
    out = tmp_path / "protocol"
    _protocol_main(
        [
            "make",
            "--root",
            str(root),
            "--out",
            str(out),
            "--held-out",
            "g1",
            "--runs",
            "3",
            "--n-way",
            "4",
            "--queries",
            "2",
        ]
    )
    split = json.loads((out / "split.json").read_text())
    assert split["novel"] == [f"g1/c{c}" for c in range(5)]
    assert not {c for c in split["base"] if c.startswith("g1/")} and len(split["base"]) == 10
    assert split["val"] == []
    runs = sorted(out.glob("run*"))
    assert [r.name for r in runs] == ["run01", "run02", "run03"]
    for run in runs:
        task = load_fixed_task(run / "support", run / "query")
        assert task.n_way == 4 and all(name.startswith("g1_") for name in task.class_names)
        assert len(task.support_paths) == 4 and len(task.query_paths) == 8
        support = {p.resolve() for p in task.support_paths}
        assert not support & {p.resolve() for p in task.query_paths}  # a query is never its own support


def test_make_excluded_groups_are_in_neither_part(tmp_path, make_tree):
    root = make_tree(tmp_path / "data", groups=3, classes=5, images=6)
    out = tmp_path / "inner"
    argv = ["make", "--root", str(root), "--out", str(out), "--held-out", "g1", "--exclude", "g2"]
    _protocol_main([*argv, "--runs", "2", "--n-way", "3", "--queries", "1"])
    split = json.loads((out / "split.json").read_text())
    assert split["base"] == [f"g0/c{c}" for c in range(5)]
    assert split["novel"] == [f"g1/c{c}" for c in range(5)]
    assert split["meta"]["excluded"] == ["g2"]
