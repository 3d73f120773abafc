from __future__ import annotations

import pytest
import torch
import torchvision

from tasks.classification.config import ClassificationModelConfig
from tasks.classification.metrics import confusion_matrix, precision_recall, topk_accuracy
from tasks.classification.model import build_classifier
from tasks.common.backbone import BackboneConfig


def test_linear_head_matches_torchvision_resnet18():
    """backbone + avg pool + linear == torchvision's resnet18 with the same weights."""
    reference = torchvision.models.resnet18(num_classes=7).eval()
    ours = build_classifier(
        ClassificationModelConfig(backbone=BackboneConfig(arch="resnet18")), num_classes=7
    ).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    ours.backbone.load_state_dict(state, strict=False)
    ours.head.fc.load_state_dict(reference.fc.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_cosine_head_and_frozen_stages():
    backbone = BackboneConfig(arch="resnet18", frozen_stages=2)
    cfg = ClassificationModelConfig(
        backbone=backbone, head="cosine", cosine_scale=10.0, pool="catavgmax", dropout=0.5
    )
    model = build_classifier(cfg, num_classes=3)
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3) and logits.abs().max() <= 10.0 + 1e-4
    assert model.head.fc.weight.shape[1] == 2 * 512  # catavgmax doubles the features
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("backbone.layer2") for n in frozen) and not any("layer3" in n for n in frozen)
    with pytest.warns(UserWarning, match="randomly initialised"):  # the backbone warns, as it should
        model.train()
    assert not model.backbone.layer1[0].bn1.training  # frozen BN stays in eval after train()


def test_bad_head_options_are_value_errors():
    with pytest.raises(ValueError, match="model.head='mlp'"):
        build_classifier(ClassificationModelConfig(head="mlp"), 2)
    with pytest.raises(ValueError, match="model.pool='gem'"):
        build_classifier(ClassificationModelConfig(pool="gem"), 2)


def test_topk_and_per_class_metrics_against_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 6, generator=g)
    labels = torch.randint(0, 6, (50,), generator=g)
    acc = topk_accuracy(logits, labels, (1, 5))
    order = logits.argsort(1, descending=True)
    assert acc[1] == pytest.approx(sum(int(order[i, 0] == labels[i]) for i in range(50)) / 50)
    assert acc[5] == pytest.approx(sum(int(labels[i] in order[i, :5]) for i in range(50)) / 50)
    assert topk_accuracy(logits[:, :3], labels.clamp(max=2), (5,))[5] == 1.0  # k capped at 3 classes
    preds = logits.argmax(1)
    cm = confusion_matrix(preds, labels, 6)
    precision, recall = precision_recall(cm)
    for c in range(6):
        tp = int(((preds == c) & (labels == c)).sum())
        assert cm[c, c] == tp and cm[c].sum() == int((labels == c).sum())
        assert precision[c] == pytest.approx(tp / max(int((preds == c).sum()), 1))
        assert recall[c] == pytest.approx(tp / max(int((labels == c).sum()), 1))
