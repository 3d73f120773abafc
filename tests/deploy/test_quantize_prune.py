"""INT8 quantization and channel pruning of a classifier checkpoint (tiny ResNet-18, 32 px)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from backbones.complexity import count_parameters
from tasks.deploy.errors import DeployError
from tasks.deploy.inputs import real_images
from tasks.deploy.prune import prune_channels
from tasks.deploy.quantize import quantize_dynamic_head, quantize_static, top1_agreement
from tasks.engine.loading import load_trained_model

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str):
    return importlib.import_module(f"tools.{name}")  # the repo root is on pytest's pythonpath


@pytest.fixture(scope="module")
def loaded(cls_checkpoint):
    return load_trained_model(cls_checkpoint)


def test_static_int8_uses_quantized_kernels_and_tracks_fp32(loaded):
    calibration = [torch.stack(real_images(loaded.task, 12, "train"))]
    val = torch.stack(real_images(loaded.task, 12, "val"))
    int8 = quantize_static(loaded.model, calibration)
    kinds = {type(m).__module__ for m in int8.modules()}
    assert any("quantized" in k for k in kinds), kinds  # real INT8 modules, not fake-quant float ops
    with torch.no_grad():
        reference = loaded.model(val)
        quantized = int8(val.contiguous(memory_format=torch.channels_last))
    # 8-bit activations: logits within a few percent of their range.
    assert (quantized - reference).abs().max() < 0.1 * (reference.max() - reference.min())
    agreement, count = top1_agreement(loaded.model, lambda x: int8(x), [val])
    assert count == len(val) and agreement >= 11 / 12


def test_dynamic_head_only_changes_the_linear_layer(loaded):
    dynamic = quantize_dynamic_head(loaded.model)
    assert type(dynamic.head.fc).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert isinstance(dynamic.backbone.conv1, nn.Conv2d)
    x = torch.stack(real_images(loaded.task, 4, "val"))
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x), loaded.model(x), atol=0.05, rtol=0.05)


def test_quantization_without_calibration_data_is_refused(loaded, cls_checkpoint, tmp_path, capsys):
    with pytest.raises(DeployError, match="calibration images"):
        quantize_static(loaded.model, [])
    missing = tmp_path / "gone"
    code = _tool("quantize").main([str(cls_checkpoint), f"data.root={missing}", "--out", str(tmp_path)])
    assert code == 2
    assert "cannot read the train data" in capsys.readouterr().err


def test_quantize_and_prune_refuse_a_model_without_class_logits(seg_checkpoint, tmp_path, capsys):
    assert _tool("quantize").main([str(seg_checkpoint), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a segmentation model; INT8 quantization measures top-1 agreement" in err
    assert "['classification'] models predict" in err
    assert _tool("prune").main([str(seg_checkpoint), "--out", str(tmp_path / "pruned.pt")]) == 2
    assert "holds a segmentation model; pruning measures" in capsys.readouterr().err


def test_quantize_tool_prints_speed_and_agreement_and_saves_torchscript(cls_checkpoint, tmp_path, capsys):
    args = [str(cls_checkpoint), "--calib-images", "8", "--val-images", "8", "--repeats", "1"]
    assert _tool("quantize").main([*args, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "int8 static (FX x86)" in printed and "int8 dynamic head" in printed and "top-1 agree" in printed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(tmp_path / "model_int8.ts"))
    loaded = load_trained_model(cls_checkpoint)
    model = loaded.model
    x = torch.stack(real_images(loaded.task, 4, "val"))
    with torch.no_grad():
        out = scripted(x.contiguous(memory_format=torch.channels_last))
        reference = model(x)
    assert out.shape == reference.shape
    assert (out - reference).abs().max() < 0.1 * (reference.max() - reference.min())


def test_pruning_shrinks_layers_and_the_checkpoint_reloads(loaded, cls_checkpoint, tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    args = [str(cls_checkpoint), "--keep", "0.5", "--out", str(out), "--val-images", "6", "--repeats", "1"]
    assert _tool("prune").main(args) == 0
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed and "MMACs" in printed
    pruned = load_trained_model(out)  # rebuilt from the config, resized to the saved widths
    assert pruned.task.name == "classification" and pruned.meta == {"classes": ["cat", "dog", "owl"]}
    reloaded = pruned.model
    assert count_parameters(reloaded) < 0.4 * count_parameters(loaded.model)  # ~keep^2 of conv weights
    widths = [m.out_channels for m in reloaded.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths) and reloaded.backbone.conv1.out_channels == 32
    x = torch.stack(real_images(loaded.task, 4, "val"))
    expected = prune_channels(loaded.model, 0.5, x[:1])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), expected(x))


def test_pruned_checkpoint_fine_tunes_through_the_training_loop(cls_checkpoint, tmp_path):
    pruned = tmp_path / "pruned.pt"
    from tasks.deploy.prune import channel_widths
    from tasks.engine.checkpoint import save_checkpoint

    loaded = load_trained_model(cls_checkpoint)
    model = prune_channels(loaded.model, 0.5, torch.stack(real_images(loaded.task, 1, "val")))
    ckpt = torch.load(cls_checkpoint, weights_only=True)
    save_checkpoint(
        {
            "model": model.state_dict(),
            "config": ckpt["config"],
            "pruned": True,
            "channel_widths": channel_widths(model),
        },
        pruned,
    )
    config = tmp_path / "cls.yaml"
    config.write_text(
        f"model:\n  backbone:\n    arch: resnet18\ndata:\n  root: {ckpt['config']['data']['root']}\n"
        "  image_size: 32\n  val_fraction: 0.5\ntrain:\n  epochs: 1\n  batch_size: 4\n"
        "  max_steps_per_epoch: 1\n  num_workers: 0\n  tensorboard: false\n  plots: false\n"
    )
    run_dir = tmp_path / "run"
    # the path: plain train_cls --weights resizes the configured layers to the pruned widths
    code = _tool("train_cls").main([str(config), "--weights", str(pruned), "--output-dir", str(run_dir)])
    assert code == 0
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert last["backbone.conv1.weight"].shape[0] == model.backbone.conv1.out_channels == 32
    assert not torch.equal(last["backbone.conv1.weight"], model.backbone.conv1.weight)  # it trained
    # its checkpoints say they are pruned, so they reload (resized) like the file the run started from
    assert load_trained_model(run_dir / "checkpoints" / "last.pt").model.backbone.conv1.out_channels == 32
    # `prune.py finetune` builds the pruned widths into the checkpoint's task (what --resume needs).
    finetuned = tmp_path / "finetuned"
    args = ["finetune", str(config), "--weights", str(pruned), "--output-dir", str(finetuned)]
    assert _tool("prune").main(args) == 0
    last = torch.load(finetuned / "checkpoints" / "last.pt", weights_only=True)
    assert last["task"]["name"] == "classification" and last["model"]["backbone.conv1.weight"].shape[0] == 32


def test_finetune_refuses_an_unpruned_checkpoint(cls_checkpoint, tmp_path, capsys):
    config = tmp_path / "cls.yaml"
    config.write_text("model:\n  backbone:\n    arch: resnet18\n")
    assert _tool("prune").main(["finetune", str(config), "--weights", str(cls_checkpoint)]) == 2
    assert "not a pruned checkpoint" in capsys.readouterr().err
