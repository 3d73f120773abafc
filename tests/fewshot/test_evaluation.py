"""Episodic evaluation: interval formula, embed-once caching, and exactness of the caches."""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks.fewshot.data import dataset_from_index, load_all, scan_class_folders
from tasks.fewshot.episodes import EpisodeSpec, sample_episodes
from tasks.fewshot.methods import FinetuneSettings, HeadTransfer, ProtoNet, SimpleShot
from tasks.fewshot.metrics import evaluate_episodes, mean_and_interval
from tasks.fewshot.transforms import build_transform


def test_mean_and_interval_formula():
    accuracies = [0.2, 0.6, 0.8, 1.0]
    mean, interval = mean_and_interval(accuracies)
    assert math.isclose(mean, 0.65)
    assert math.isclose(interval, 1.96 * np.std(accuracies) / math.sqrt(4))


def _episodes_and_images(tree, n_way=3, k_shot=1, q_query=2, count=6):
    index = scan_class_folders(tree)
    images = load_all(dataset_from_index(index, build_transform(32, 1), 1))
    return images, sample_episodes(index, EpisodeSpec(n_way, k_shot, q_query, seed=0), count)


def test_frozen_feature_methods_embed_each_image_once(nested_tree, tiny_net):
    images, episodes = _episodes_and_images(nested_tree, count=8)
    used = {i for ep in episodes for i in (*ep.support, *ep.query)}
    for method in (ProtoNet(), SimpleShot(None)):
        cached = evaluate_episodes(method, tiny_net, images, episodes)
        loop = evaluate_episodes(method, tiny_net, images, episodes, cache=False)
        assert cached.num_images_embedded == len(used) < loop.num_images_embedded == 8 * 9
        assert all(torch.equal(a, b) for a, b in zip(cached.predictions, loop.predictions))
        assert cached.accuracies == loop.accuracies
    # Classes are distinct random patterns: even a random-init ResNet separates them far above chance.
    assert evaluate_episodes(ProtoNet(), tiny_net, images, episodes).mean > 0.8


def test_finetuning_caches_only_the_frozen_prefix(nested_tree, tiny_net):
    images, episodes = _episodes_and_images(nested_tree, count=2)
    method = HeadTransfer(tiny_net, "cosine", FinetuneSettings(frozen_stages=3, epochs=2))
    cached = evaluate_episodes(method, tiny_net, images, episodes)
    loop = evaluate_episodes(method, tiny_net, images, episodes, cache=False)
    assert all(torch.equal(a, b) for a, b in zip(cached.predictions, loop.predictions))


def test_head_only_transfer_runs_batched_with_the_same_predictions(nested_tree, tiny_net):
    images, episodes = _episodes_and_images(nested_tree, count=5)
    method = HeadTransfer(tiny_net, "linear", FinetuneSettings(frozen_stages=4, epochs=20))
    batched = evaluate_episodes(method, tiny_net, images, episodes)
    one_by_one = evaluate_episodes(method, tiny_net, images, episodes, cache=False)
    assert all(torch.equal(a, b) for a, b in zip(batched.predictions, one_by_one.predictions))
    summary = batched.summary()
    assert summary["episodes"] == 5 and 0 <= summary["accuracy"] <= 1 and summary["ci95"] >= 0
