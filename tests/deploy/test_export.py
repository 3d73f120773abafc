"""Export parity (TorchScript and ONNX) of the three exportable task models, and the bad-input errors."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch

from tasks.deploy.errors import DeployError
from tasks.deploy.export import OnnxModel
from tasks.deploy.inputs import real_images
from tasks.engine.checkpoint import CheckpointError
from tasks.engine.loading import load_trained_model

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str):
    return importlib.import_module(f"tools.{name}")  # the repo root is on pytest's pythonpath


def _load_ts(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


def test_classifier_export_matches_pytorch(cls_checkpoint, tmp_path, capsys):
    assert _tool("export").main([str(cls_checkpoint), "--out", str(tmp_path), "--num-images", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("OK") == 2 and "tolerance atol=0.0001" in printed
    loaded = load_trained_model(cls_checkpoint)
    batch = torch.stack(real_images(loaded.task, 5, "train"))  # images the parity check did not see
    with torch.no_grad():
        expected = loaded.model(batch)
        scripted = _load_ts(tmp_path / "best.ts")(batch.contiguous(memory_format=torch.channels_last))
    onnx_out = OnnxModel(tmp_path / "best.onnx")(batch)[0]  # dynamic batch: 5 images, exported with 3
    torch.testing.assert_close(scripted, expected, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(onnx_out, expected, atol=1e-4, rtol=1e-3)


def test_exported_classifier_carries_its_class_names(cls_checkpoint, tmp_path):
    import onnxruntime

    assert _tool("export").main([str(cls_checkpoint), "--out", str(tmp_path), "--num-images", "2"]) == 0
    classes = {"classes": ["cat", "dog", "owl"]}
    assert json.loads((tmp_path / "best.json").read_text())["task_meta"] == classes
    extra = {"task_meta.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(tmp_path / "best.ts"), _extra_files=extra)
    assert json.loads(extra["task_meta.json"]) == classes
    session = onnxruntime.InferenceSession(str(tmp_path / "best.onnx"))
    assert json.loads(session.get_modelmeta().custom_metadata_map["task_meta"]) == classes


def test_unet_export_accepts_any_size(seg_checkpoint, tmp_path):
    assert _tool("export").main([str(seg_checkpoint), "--out", str(tmp_path), "--num-images", "1"]) == 0
    model = load_trained_model(seg_checkpoint).model
    scripted = _load_ts(tmp_path / "best.ts")
    onnx_model = OnnxModel(tmp_path / "best.onnx")
    for height, width in ((37, 53), (64, 80)):  # neither is the export size; 37x53 is not a stride multiple
        x = torch.rand(1, 1, height, width)
        with torch.no_grad():
            expected = model(x)
            torch.testing.assert_close(scripted(x), expected, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(onnx_model(x)[0], expected, atol=1e-4, rtol=1e-3)
        assert expected.shape[-2:] == (height, width)


def test_detector_export_parity_and_size_errors(det_checkpoint, tmp_path, capsys):
    code = _tool("export").main(
        [str(det_checkpoint), "--out", str(tmp_path), "--num-images", "2", "--input-size", "64", "80"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("OK") == 4  # 2 images x 2 formats
    x = torch.rand(1, 3, 64, 80)
    boxes, scores, labels = _load_ts(tmp_path / "best.ts")(x)
    assert len(boxes) > 0  # threshold 0: the parity check compared real boxes, not two empty tensors
    wrong = torch.rand(1, 3, 72, 80)
    with pytest.raises(Exception, match=r"exported for input \(1, 3, 64, 80\)"):
        _load_ts(tmp_path / "best.ts")(wrong)
    with pytest.raises(DeployError, match="exported for input shape"):
        OnnxModel(tmp_path / "best.onnx")(wrong)


def test_export_checks_the_model_section_of_a_given_config(cls_checkpoint, tmp_path, capsys):
    config = tmp_path / "other.yaml"
    config.write_text("model:\n  backbone:\n    arch: resnet34\n  dropout: 0.2\n")
    code = _tool("export").main([str(cls_checkpoint), "--config", str(config), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.backbone.arch: checkpoint='resnet18' config='resnet34'" in err
    assert "model.dropout" in err and not list(tmp_path.glob("*.onnx"))
    # The same network with other weights and freezing (they only say how training started) passes.
    config.write_text(
        "model:\n  backbone:\n    arch: resnet18\n    weights: IMAGENET1K_V1\n    frozen_stages: 2\n"
    )
    args = [str(cls_checkpoint), "--config", str(config), "--out", str(tmp_path), "--formats", "torchscript"]
    assert _tool("export").main([*args, "--num-images", "2"]) == 0


def test_a_task_without_export_support_is_refused_before_reading_data(fewshot_checkpoint, tmp_path, capsys):
    assert _tool("export").main([str(fewshot_checkpoint), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a fewshot model, which cannot be exported" in err
    assert "['classification', 'detection', 'segmentation']" in err and not list(tmp_path.iterdir())


def test_weights_that_do_not_fit_the_saved_config_are_named(cls_checkpoint, tmp_path):
    ckpt = torch.load(cls_checkpoint, weights_only=True)
    ckpt["config"]["model"]["backbone"]["arch"] = "resnet34"  # config says 34, weights are a resnet18
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt does not fit this model.*not in the checkpoint"):
        load_trained_model(tmp_path / "bad.pt")


def test_checkpoint_without_config_is_refused(tmp_path, capsys):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "raw.pt")
    assert _tool("export").main([str(tmp_path / "raw.pt"), "--out", str(tmp_path)]) == 2
    assert "raw.pt: no 'config' entry" in capsys.readouterr().err
