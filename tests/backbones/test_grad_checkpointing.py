"""Gradient checkpointing of layer1..layer4: the plain model's training step, far fewer bytes kept."""

import copy
from unittest import mock

import pytest
import torch
from torch import nn

from backbones import create_backbone
from benchmarks.backbone import largest_level_bytes, saved_activation_bytes
from tasks.classification.config import ClassificationModelConfig
from tasks.common.backbone import BackboneConfig, build_backbone, model_signature
from tasks.detection.config import DetectionModelConfig
from tasks.fewshot.config import FewShotModelConfig
from tasks.segmentation.config import SegmentationModelConfig
from tasks.segmentation.model import build_unet

TIGHT = dict(rtol=1e-5, atol=1e-6)


def _pair(arch: str, **kwargs):
    """A plain backbone in train mode and a checkpointed copy with the same weights and statistics."""
    plain = create_backbone(arch, out_indices=(1, 4), **kwargs)
    if plain.frozen_stages >= 0:
        plain.load_state_dict(plain.state_dict())  # counts as loaded: freezing it does not warn
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    return plain.train(), checkpointed.train()


def _train_step(model, images: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """One forward and backward from ``seed`` (stochastic depth draws from it); returns the outputs."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    outputs = list(model(images).values())
    sum(output.square().mean() for output in outputs).backward()
    return [output.detach() for output in outputs]


def _assert_same_step(plain, checkpointed, images: torch.Tensor, steps: int = 1) -> None:
    """Outputs, parameter gradients and every buffer (BN running statistics, batch counts) agree."""
    for seed in range(steps):
        torch.testing.assert_close(
            _train_step(checkpointed, images, seed), _train_step(plain, images, seed), **TIGHT
        )
        for (name, ours), theirs in zip(checkpointed.named_parameters(), plain.parameters()):
            if theirs.grad is None:
                assert ours.grad is None, name
            else:
                torch.testing.assert_close(ours.grad, theirs.grad, **TIGHT, msg=name)
        for (name, ours), theirs in zip(checkpointed.named_buffers(), plain.buffers()):
            torch.testing.assert_close(ours, theirs, **TIGHT, msg=name)


def test_checkpointed_step_equals_the_plain_one():
    # Recomputation runs each BatchNorm forward again in train mode: without putting the buffers back,
    # running_mean/var would move twice per step and num_batches_tracked would count 2 per step.
    plain, checkpointed = _pair("resnet18")
    _assert_same_step(plain, checkpointed, torch.randn(2, 3, 32, 32), steps=2)
    counts = {int(m.num_batches_tracked) for m in checkpointed.modules() if isinstance(m, nn.BatchNorm2d)}
    assert counts == {2}


def test_stochastic_depth_drops_the_same_blocks_when_recomputed():
    plain, checkpointed = _pair("resnet18", drop_path_rate=0.5)
    images = torch.randn(4, 3, 32, 32)
    assert not torch.equal(_train_step(plain, images, 0)[1], _train_step(plain, images, 1)[1])  # it drops
    plain.load_state_dict(checkpointed.state_dict())  # the two steps above moved plain's statistics
    # checkpoint restores the RNG state before recomputing (preserve_rng_state): the same masks are drawn.
    _assert_same_step(plain, checkpointed, images)


def test_frozen_levels_are_not_checkpointed_and_stay_frozen():
    plain, checkpointed = _pair("resnet18", frozen_stages=2)
    frozen_before = {
        k: v.clone()
        for k, v in checkpointed.state_dict().items()
        if k.startswith(("conv1", "bn1", "layer1", "layer2"))
    }
    with mock.patch.object(
        checkpointed, "_checkpointed_level", wraps=checkpointed._checkpointed_level
    ) as spy:
        _assert_same_step(plain, checkpointed, torch.randn(2, 3, 32, 32))
    assert [call.args[0] for call in spy.call_args_list] == [3, 4]
    for key, value in frozen_before.items():
        torch.testing.assert_close(checkpointed.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert all(p.grad is None for p in checkpointed.layer2.parameters())


def test_eval_and_no_grad_do_not_checkpoint():
    model = create_backbone("resnet18", out_indices=(4,), grad_checkpointing=True)
    assert model.grad_checkpointing
    images = torch.randn(2, 3, 32, 32)
    with mock.patch.object(model, "_checkpointed_level", wraps=model._checkpointed_level) as spy:
        model.eval()(images)
        with torch.no_grad():
            model.train()(images)
        assert spy.call_count == 0
        model(images)
        assert spy.call_count == 4
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing


def test_resnet50_keeps_at_least_2_5x_fewer_activations_for_backward():
    plain, checkpointed = _pair("resnet50")
    images = torch.randn(2, 3, 64, 64)
    kept_plain = saved_activation_bytes(lambda: _train_step(plain, images, 0))
    kept = saved_activation_bytes(lambda: _train_step(checkpointed, images, 0))
    assert kept_plain >= 2.5 * kept
    # Backward recomputes one level at a time: its peak stays below the plain model's too.
    assert kept + largest_level_bytes(checkpointed, images) < kept_plain


@pytest.mark.parametrize(
    "model_config",
    [ClassificationModelConfig, DetectionModelConfig, SegmentationModelConfig, FewShotModelConfig],
)
def test_every_task_section_turns_it_on_and_the_signature_ignores_it(model_config):
    plain = model_config(backbone=BackboneConfig(arch="resnet18"))
    checkpointed = model_config(backbone=BackboneConfig(arch="resnet18", grad_checkpointing=True))
    assert build_backbone(checkpointed.backbone, out_indices=(4,)).grad_checkpointing
    assert not build_backbone(plain.backbone, out_indices=(4,)).grad_checkpointing
    # It changes how a step runs, not the tensors a checkpoint holds: resume and eval accept either.
    assert model_signature(checkpointed) == model_signature(plain)


def test_unet_built_from_its_config_trains_with_a_checkpointed_encoder():
    cfg = SegmentationModelConfig(
        backbone=BackboneConfig(arch="resnet18", in_chans=1, grad_checkpointing=True),
        num_classes=2,
        mode="binary",
        decoder_channels=[32, 16, 16, 16, 16],
    )
    model = build_unet(cfg).train()
    assert model.encoder.backbone.grad_checkpointing
    model(torch.randn(2, 1, 64, 64)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
