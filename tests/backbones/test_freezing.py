"""Frozen means frozen: no gradient, no BatchNorm statistics drift, also after model.train()."""

import warnings

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from backbones import ResNet, convert_frozen_batchnorm, create_backbone, freeze_stage_norms, summary


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def one_training_step(model):
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    features = model(torch.randn(4, 3, 64, 64))
    if not trainable:  # frozen_stages=4: the forward pass alone must leave everything as it was
        assert not any(f.requires_grad for f in features.values())
        return
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    loss = sum(f.float().pow(2).mean() for f in features.values())
    loss.backward()
    optimizer.step()


def stage_keys(model, level):
    prefixes = {0: ("conv1.", "bn1."), 4: ("layer4.", "final_norm.")}.get(level, (f"layer{level}.",))
    return [k for k in model.state_dict() if k.startswith(prefixes)]


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2, 3, 4])
def test_one_step_changes_only_unfrozen_stages(frozen_stages):
    model = ResNet(18, out_indices=(0, 1, 2, 3, 4), frozen_stages=frozen_stages)
    model.pretrained_loaded = True  # pretend weights were loaded: the random-freeze warning is tested apart
    model.eval()
    model.train()  # the bug users hit: train() must not unfreeze BatchNorm statistics
    before = snapshot(model)
    one_training_step(model)
    after = snapshot(model)
    for level in range(5):
        keys = [k for k in stage_keys(model, level) if not k.endswith("num_batches_tracked")]
        changed = [k for k in keys if not torch.equal(before[k], after[k])]
        if level <= frozen_stages:
            assert changed == [], f"frozen level {level} changed: {changed[:3]}"
            assert all(not p.requires_grad for m in model.stage_modules(level) for p in m.parameters())
        else:
            assert any("running_mean" in k for k in changed), f"level {level} BN stats did not move"
            assert any(k.endswith("weight") and "bn" not in k for k in changed), f"level {level} conv weights"


def test_norm_eval_keeps_every_batchnorm_statistic():
    model = ResNet(18, norm_eval=True)
    before = snapshot(model)
    one_training_step(model)
    after = snapshot(model)
    stats = [k for k in before if "running_" in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])


def test_frozen_stages_keep_no_activations():
    model = ResNet(18, out_indices=(2, 4), frozen_stages=2)
    model.pretrained_loaded = True
    model.train()
    features = model(torch.randn(2, 3, 64, 64))
    assert features["layer2"].grad_fn is None and not features["layer2"].requires_grad
    assert features["layer4"].requires_grad


def test_freezing_random_weights_warns_and_loaded_weights_do_not():
    with pytest.warns(UserWarning, match="randomly initialised"):
        ResNet(18, frozen_stages=1).train()
    model = ResNet(18, frozen_stages=1)
    model.load_state_dict(ResNet(18).state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train()


def test_frozen_batchnorm_conversion_keeps_outputs():
    model = ResNet(18, frozen_stages=2).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)["layer4"]
        freeze_stage_norms(model)
        assert isinstance(model.bn1, FrozenBatchNorm2d) and isinstance(model.layer2[0].bn1, FrozenBatchNorm2d)
        assert isinstance(model.layer3[0].bn1, torch.nn.BatchNorm2d)
        torch.testing.assert_close(model(x)["layer4"], expected)
        whole = convert_frozen_batchnorm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in whole.modules())


def test_summary_reports_trainable_and_bn_mode():
    model = ResNet(18, frozen_stages=1)
    model.pretrained_loaded = True
    text = summary(model.train())
    lines = {line.split()[1]: line for line in text.splitlines()[2:7]}
    assert " 0 " in lines["layer1"] and "eval" in lines["layer1"]
    assert "train" in lines["layer2"] and "frozen_stages=1" in text


def test_frozen_statistics_hold_before_the_first_train_call():
    """A freshly built module is in train mode without train() being called: frozen BN must not move."""
    model = create_backbone("resnet18", frozen_stages=1, norm_eval=False)
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.layer1[0].bn1.running_mean, before)
    assert model.layer2[0].bn1.running_mean.abs().sum() > 0  # an unfrozen stage does learn statistics
