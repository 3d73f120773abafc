"""tools/train_fewshot.py and tools/eval_fewshot.py end to end on tiny synthetic data, and fixed-task mode."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str):
    return importlib.import_module(f"tools.{name}")  # the repo root is on pytest's pythonpath


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_tree, tiny):
    """One tiny Baseline++ base training run (rotations on) shared by the tests below."""
    data = shared_tree
    out = tmp_path_factory.mktemp("fewshot_tools") / "run"
    code = _tool("train_fewshot").main(
        ["configs/fewshot/omniglot_baseline_pp.yaml", f"data.root={data}", *tiny, "--output-dir", str(out)]
    )
    assert code == 0
    return data, out


def test_train_writes_run_folder_and_split(trained):
    data, out = trained
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "summary.json").is_file()
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["base"] + split["val"] + split["novel"]) == sorted(
        f"g{g}/c{c}" for g in range(2) for c in range(4)
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_metric"] == "val_acc" and 0.0 <= summary["best_value"] <= 1.0


def test_protonet_episodic_training(tmp_path, shared_tree, tiny):
    out = tmp_path / "proto"
    args = [
        "configs/fewshot/omniglot_protonet.yaml",
        f"data.root={shared_tree}",
        *tiny,
        "data.n_way=3",
        "data.k_shot=1",
        "data.q_query=2",
        "data.episodes_per_epoch=2",
        "--output-dir",
        str(out),
    ]
    assert _tool("train_fewshot").main(args) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in m for m in metrics)


def test_eval_episodes_saved_and_replayed_exactly(trained, tmp_path):
    _, run = trained
    evaluate = _tool("eval_fewshot").main
    common = [
        "--checkpoint",
        str(run / "checkpoints" / "best.pt"),
        "--split",
        "all",
        "--method",
        "simpleshot,protonet,baseline",
        "--frozen-stages",
        "4",
        "--finetune-epochs",
        "5",
    ]
    first = tmp_path / "first"
    assert (
        evaluate(
            [
                *common,
                "--n-way",
                "3",
                "--k-shot",
                "2",
                "--q-query",
                "3",
                "--episodes",
                "6",
                "--seed",
                "4",
                "--same-group",
                "--output-dir",
                str(first),
            ]
        )
        == 0
    )
    again = tmp_path / "again"
    assert (
        evaluate([*common, "--episodes-file", str(first / "episodes.json"), "--output-dir", str(again)]) == 0
    )
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, again))
    assert a["spec"] == b["spec"] == {"n_way": 3, "k_shot": 2, "q_query": 3, "seed": 4, "same_group": True}
    for method in ("simpleshot", "protonet", "baseline"):
        assert a["methods"][method]["episodes"] == 6
        assert a["methods"][method]["accuracy"] == b["methods"][method]["accuracy"]
        assert a["methods"][method]["ci95"] == b["methods"][method]["ci95"]
    assert (first / "episodes.json").read_text() == (again / "episodes.json").read_text()


def _fixed_task(root: Path, rng, classes=("cat", "dog", "emu"), shots=2, labelled=True):
    support, query = root / "support", root / "query"
    for name in classes:
        pattern = np.kron(rng.integers(0, 2, (8, 8)), np.ones((4, 4))) * 220
        for k in range(shots + 2):
            image = Image.fromarray(
                np.clip(pattern + rng.integers(0, 30, pattern.shape), 0, 255).astype(np.uint8)
            )
            if k < shots:
                (support / name).mkdir(parents=True, exist_ok=True)
                image.save(support / name / f"{k}.png")
            else:
                target = query / name if labelled else query
                target.mkdir(parents=True, exist_ok=True)
                # Mixed sizes and modes in the query set: RGB and a different size are converted.
                image.convert("RGB").resize((48, 40)).save(target / f"{name}_{k}.png")
    return support, query


def test_fixed_task_predictions_csv(trained, tmp_path):
    _, run = trained
    support, query = _fixed_task(tmp_path / "task", np.random.default_rng(0))
    out = tmp_path / "out"
    ckpt = str(run / "checkpoints" / "best.pt")
    assert (
        _tool("eval_fewshot").main(
            [
                "--checkpoint",
                ckpt,
                "--method",
                "protonet",
                "--support",
                str(support),
                "--query",
                str(query),
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 6 and set(rows[0]) == {"path", "predicted", "probability", "label", "correct"}
    result = json.loads((out / "results.json").read_text())
    assert result["accuracy"] == pytest.approx(np.mean([int(r["correct"]) for r in rows]))
    assert result["accuracy"] > 0.5  # 3 distinct patterns, chance is 1/3

    unlabelled_support, unlabelled = _fixed_task(tmp_path / "u", np.random.default_rng(1), labelled=False)
    out2 = tmp_path / "out2"
    assert (
        _tool("eval_fewshot").main(
            [
                "--checkpoint",
                ckpt,
                "--method",
                "baseline",
                "--frozen-stages",
                "3",
                "--finetune-epochs",
                "2",
                "--support",
                str(unlabelled_support),
                "--query",
                str(unlabelled),
                "--output-dir",
                str(out2),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((out2 / "predictions.csv").open()))
    assert (
        len(rows) == 6 and "label" not in rows[0] and {r["predicted"] for r in rows} <= {"cat", "dog", "emu"}
    )
    assert json.loads((out2 / "results.json").read_text())["accuracy"] is None


def test_fixed_task_with_the_checkpoints_views_and_their_override(trained, tmp_path, capsys):
    _, run = trained
    support, query = _fixed_task(tmp_path / "task", np.random.default_rng(0))
    ckpt = run / "checkpoints" / "best.pt"
    state = torch.load(ckpt, weights_only=True)
    state["config"]["eval"] = {"tta": ["rotate90"]}
    viewed = tmp_path / "viewed.pt"
    torch.save(state, viewed)
    evaluate = _tool("eval_fewshot").main
    task = ["--method", "simpleshot", "--support", str(support), "--query", str(query)]
    results = {}
    for name, extra in [("config", []), ("cli", ["--tta", "rotate90"]), ("none", ["--tta", "none"])]:
        checkpoint = str(viewed) if name == "config" else str(ckpt)
        out = tmp_path / name
        assert evaluate(["--checkpoint", checkpoint, *task, *extra, "--output-dir", str(out)]) == 0
        results[name] = json.loads((out / "results.json").read_text())
        results[name]["csv"] = (out / "predictions.csv").read_text()
    assert results["config"]["tta"] == results["cli"]["tta"] == ["rotate90"] and results["none"]["tta"] == []
    assert results["config"]["csv"] == results["cli"]["csv"]  # the checkpoint's views, or the same by flag
    assert results["none"]["csv"] != results["config"]["csv"]  # the views change the probabilities

    fine_tune = ["--method", "baseline", "--frozen-stages", "3", "--output-dir", str(tmp_path / "ft")]
    assert evaluate(["--checkpoint", str(viewed), *task[2:], *fine_tune]) == 2
    message = capsys.readouterr().err
    assert "its eval.tta (rotate90)" in message and "--frozen-stages 4 or --tta none" in message


def test_fixed_task_bad_inputs_name_the_folder(trained, tmp_path, capsys):
    _, run = trained
    evaluate = _tool("eval_fewshot").main
    support, query = _fixed_task(tmp_path / "t", np.random.default_rng(2))
    ckpt = ["--checkpoint", str(run / "checkpoints" / "best.pt"), "--output-dir", str(tmp_path / "o")]

    (query / "yak").mkdir()
    Image.new("L", (32, 32)).save(query / "yak" / "0.png")
    assert evaluate([*ckpt, "--support", str(support), "--query", str(query)]) == 2
    assert "query class folder" in capsys.readouterr().err and "'yak'" in capsys.readouterr().err + "'yak'"

    empty = tmp_path / "empty_support"
    empty.mkdir()
    assert evaluate([*ckpt, "--support", str(empty), "--query", str(query)]) == 2
    assert f"support folder {empty} is empty" in capsys.readouterr().err

    (support / "cat2").mkdir()
    assert evaluate([*ckpt, "--support", str(support), "--query", str(query)]) == 2
    assert "cat2 has no images" in capsys.readouterr().err


def test_eval_bad_episode_requests(trained, tmp_path, capsys):
    _, run = trained
    evaluate = _tool("eval_fewshot").main
    ckpt = ["--checkpoint", str(run / "checkpoints" / "best.pt"), "--output-dir", str(tmp_path / "o")]
    assert evaluate([*ckpt, "--split", "all", "--n-way", "9", "--episodes", "1"]) == 2
    assert "n_way=9 is larger than the number of classes (8)" in capsys.readouterr().err
    assert evaluate([*ckpt, "--split", "all", "--k-shot", "5", "--q-query", "5", "--episodes", "1"]) == 2
    assert "has 6 images but k_shot + q_query = 5 + 5 = 10" in capsys.readouterr().err
    assert evaluate([*ckpt, "--method", "maml"]) == 2
    assert "expected names from" in capsys.readouterr().err
