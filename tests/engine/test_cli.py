from __future__ import annotations

import json

from tasks.engine.cli import build_parser, parse_args, run_training_tool


def test_parser_flags():
    args = build_parser().parse_args(["c.yaml", "train.lr=0.1", "--resume", "--eval-only", "--device", "cpu"])
    assert args.resume == "auto" and args.eval_only and args.device == "cpu"
    assert args.overrides == ["train.lr=0.1"]
    assert build_parser().parse_args(["c.yaml", "--resume", "x.pt"]).resume == "x.pt"
    assert build_parser().parse_args(["c.yaml"]).resume is None
    late = parse_args(["c.yaml", "--output-dir", "o", "a.b=1", "--resume", "c.d=2"])
    assert late.overrides == ["a.b=1", "c.d=2"] and late.resume == "auto" and late.output_dir == "o"


def test_tool_exit_codes_and_messages(tmp_path, toy_task_cls, toy_config_cls, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text(
        "device: cpu\ntrain:\n  epochs: 1\n  batch_size: 8\n  num_workers: 0\n  plots: false\n"
        "  tensorboard: false\n  checkpoint_every_steps: 1\n"
    )
    out = str(tmp_path / "run")
    assert run_training_tool(toy_task_cls, toy_config_cls, [str(config), "--output-dir", out]) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 6  # the summary is printed as JSON

    assert run_training_tool(toy_task_cls, toy_config_cls, [str(config), "train.epochs=two"]) == 2
    assert "train.epochs: expected an integer, got 'two'" in capsys.readouterr().err

    nan = [str(config), "--output-dir", str(tmp_path / "nan"), "data.nan_at_step=2"]
    assert run_training_tool(toy_task_cls, toy_config_cls, nan) == 3
    err = capsys.readouterr().err
    assert "loss is nan" in err and "optimizer step 2" in err

    assert (
        run_training_tool(toy_task_cls, toy_config_cls, [str(config), "--output-dir", out, "--eval-only"])
        == 0
    )
    assert (tmp_path / "run" / "eval.json").is_file()


def test_only_user_errors_become_one_line_messages(tmp_path, toy_task_cls, toy_config_cls, capsys):
    """A ValueError from a bug (here inside the training step) keeps its traceback; bad input exits 2."""
    import pytest

    from backbones.errors import UserError
    from tasks.engine import CheckpointError, ConfigError
    from tasks.engine.run_folder import RunFolderError

    assert all(issubclass(e, UserError) for e in (ConfigError, CheckpointError, RunFolderError))
    config = tmp_path / "toy.yaml"
    config.write_text(
        "device: cpu\ntrain:\n  epochs: 1\n  num_workers: 0\n  plots: false\n  tensorboard: false\n"
    )

    class BuggyTask(toy_task_cls):
        def training_step(self, model, batch, device):
            raise ValueError("a bug, not bad input")

    with pytest.raises(ValueError, match="a bug, not bad input"):
        run_training_tool(BuggyTask, toy_config_cls, [str(config), "--output-dir", str(tmp_path / "a")])
    assert run_training_tool(toy_task_cls, toy_config_cls, [str(config), "--weights", "missing.pt"]) == 2
    assert capsys.readouterr().err.strip() == "error: checkpoint not found: missing.pt"


def test_every_other_tool_keeps_the_traceback_of_a_bug(tmp_path, monkeypatch, capsys):
    """predict, eval, export and the data tools share the rule of the training tools."""
    import pytest

    from tools import predict_det, voc2coco

    # Bad input: one line, exit 2.
    assert voc2coco.main([str(tmp_path / "nowhere"), str(tmp_path / "out.json")]) == 2
    assert capsys.readouterr().err.startswith("error: no .xml files in")

    # A ValueError from inside the work (a bug, here in torch) is not turned into "error: ...".
    def broken(*args, **kwargs):
        raise ValueError("a bug inside torch")

    monkeypatch.setattr(predict_det, "load_trained_model", broken)
    with pytest.raises(ValueError, match="a bug inside torch"):
        predict_det.main(["best.pt", str(tmp_path)])
