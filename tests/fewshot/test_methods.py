"""Heads and methods against their reference formulas; fine-tuning leaves the trained net untouched."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.fewshot.heads import CosineHead, class_means, default_cosine_scale, prototype_logits
from tasks.fewshot.methods import FinetuneSettings, HeadTransfer, ProtoNet, SimpleShot, build_method
from tasks.fewshot.metrics import frozen_activations
from tasks.fewshot.model import MultiViewNet, embed_images, with_views


def test_prototype_logits_match_the_formula():
    support = torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    query = torch.randn(5, 4, dtype=torch.float64)
    prototypes = torch.stack([support[2 * c : 2 * c + 2].mean(0) for c in range(3)])
    expected = -((query[:, None, :] - prototypes[None]) ** 2).sum(-1)
    torch.testing.assert_close(prototype_logits(support, labels, query, 3), expected)
    torch.testing.assert_close(class_means(support, labels, 3), prototypes)


def test_simpleshot_centres_then_normalises():
    support, query = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    mean = torch.randn(3, dtype=torch.float64)
    s = (support - mean) / (support - mean).norm(dim=1, keepdim=True)
    q = (query - mean) / (query - mean).norm(dim=1, keepdim=True)
    expected = ProtoNet().predict(s, labels, q, 2)
    torch.testing.assert_close(SimpleShot(mean).predict(support, labels, query, 2), expected)


def test_cosine_head_is_scaled_cosine_with_class_norms():
    head = CosineHead(5, 3)
    assert head.scale == 2.0 and default_cosine_scale(201) == 10.0
    x = torch.randn(4, 5)
    weight = head.linear.weight  # weight_norm: g * v / |v| per class row
    g = head.linear.parametrizations.weight.original0.squeeze(1)
    expected = 2.0 * F.cosine_similarity(x[:, None, :], weight[None], dim=-1) * g
    torch.testing.assert_close(head(x), expected, atol=1e-4, rtol=1e-4)


def reference_head_fit(head, support, labels, query, settings, seed):
    """Chen et al.'s `set_forward_adaptation` loop (baselinefinetune.py), one episode, plain modules."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        head.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        dampening=settings.dampening,
        weight_decay=settings.weight_decay,
    )
    for _ in range(settings.epochs):
        order = torch.randperm(len(support), generator=generator)
        for start in range(0, len(support), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            F.cross_entropy(head(support[batch]), labels[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        return head(query)


@pytest.mark.parametrize("head_kind", ["linear", "cosine"])
def test_batched_head_transfer_matches_the_reference_loop(tiny_net, head_kind):
    torch.manual_seed(0)
    settings = FinetuneSettings(frozen_stages=4, epochs=15, seed=5)
    method = HeadTransfer(tiny_net, head_kind, settings)
    assert method.uses_frozen_features and method.prefix_level == 4
    episodes, n_way, shots = 4, 3, 3
    support = torch.randn(episodes, n_way * shots, 512)
    labels = torch.arange(n_way).repeat_interleave(shots).expand(episodes, -1)
    query = torch.randn(episodes, 5, 512)
    batched = method.predict_batch(support, labels, query, n_way, list(range(10, 10 + episodes)))
    for e in range(episodes):
        head = method._initial_head(n_way, 10 + e)  # the seeded init every path uses
        expected = reference_head_fit(head, support[e], labels[e], query[e], settings, settings.seed + 10 + e)
        torch.testing.assert_close(batched[e], expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            method.predict(support[e], labels[e], query[e], n_way, 10 + e), expected, atol=1e-5, rtol=1e-4
        )


def test_head_only_transfer_learns_separable_support(tiny_net):
    torch.manual_seed(0)
    centres = torch.randn(3, 512) * 3
    support = centres.repeat_interleave(2, 0) + 0.1 * torch.randn(6, 512)
    labels = torch.arange(3).repeat_interleave(2)
    for head in ("linear", "cosine"):
        method = HeadTransfer(tiny_net, head, FinetuneSettings(frozen_stages=4))
        assert torch.equal(method.predict(support, labels, support, 3).argmax(1), labels)
        first = HeadTransfer(tiny_net, head, FinetuneSettings(frozen_stages=4, epochs=1))
        assert not torch.equal(
            first.predict(support, labels, support, 3, 0), first.predict(support, labels, support, 3, 1)
        )


def test_finetuning_last_stage_from_cached_prefix(tiny_net):
    images = torch.randn(6, 1, 32, 32)
    # The suffix run from the frozen layer3 activations is exactly the network's own forward.
    method = HeadTransfer(tiny_net, "linear", FinetuneSettings(frozen_stages=3, epochs=2))
    prefix = frozen_activations(tiny_net, images, method.prefix_level)
    torch.testing.assert_close(
        method._features(tiny_net.backbone, prefix), frozen_activations(tiny_net, images, 4)
    )
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = method.predict(prefix, labels, prefix, 3)
    assert logits.shape == (6, 3) and torch.isfinite(logits).all()
    after = tiny_net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "fine-tuning must work on a copy"
    assert not method.uses_frozen_features


def test_build_method_names_and_settings_errors(tiny_net):
    assert isinstance(build_method("protonet", tiny_net), ProtoNet)
    assert build_method("baseline++", tiny_net).head_kind == "cosine"
    with pytest.raises(ValueError, match="method must be one of"):
        build_method("matchingnet", tiny_net)
    with pytest.raises(ValueError, match="frozen_stages must be in -1..4"):
        FinetuneSettings(frozen_stages=5)
    assert math.isclose(FinetuneSettings().weight_decay, 1e-3) and FinetuneSettings().batch_size == 4


def test_views_concatenate_each_views_embedding_so_prototype_scores_add_up(tiny_net):
    images = torch.randn(6, 1, 32, 32)
    net = with_views(tiny_net, ["rotate90"])
    assert isinstance(net, MultiViewNet) and net.num_features == 4 * tiny_net.num_features
    per_view = [embed_images(tiny_net, torch.rot90(images, turns, dims=(2, 3))) for turns in range(4)]
    joined = embed_images(net, images)
    torch.testing.assert_close(joined, torch.cat(per_view, dim=1))
    labels = torch.tensor([0, 1, 2])
    summed = sum(ProtoNet().predict(v[:3], labels, v[3:], 3) for v in per_view)
    torch.testing.assert_close(ProtoNet().predict(joined[:3], labels, joined[3:], 3), summed)
    assert with_views(tiny_net, []) is tiny_net


def test_head_only_transfer_fits_a_head_as_wide_as_the_views(tiny_net):
    net = with_views(tiny_net, ["hflip"])
    support = frozen_activations(net, torch.randn(4, 1, 32, 32), 4)
    method = build_method("baseline", net, finetune=FinetuneSettings(frozen_stages=4, epochs=2))
    logits = method.predict(support, torch.tensor([0, 1, 0, 1]), support, 2)
    assert support.shape == (4, 2 * tiny_net.num_features) and logits.shape == (4, 2)
