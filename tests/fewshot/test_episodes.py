"""Class-level splits, seeded episodes, JSON replay, and every episode-related bad input."""

from __future__ import annotations

import json

import pytest

from tasks.fewshot.data import FewShotDataError, scan_class_folders
from tasks.fewshot.episodes import (
    EpisodeBatchSampler,
    EpisodeSpec,
    load_episodes,
    sample_episodes,
    save_episodes,
)
from tasks.fewshot.splits import load_split, save_split, split_classes


def test_class_split_is_disjoint_complete_and_seeded(nested_tree):
    index = scan_class_folders(nested_tree)
    split = split_classes(index, (0.5, 0.25, 0.25), seed=3)
    parts = [set(split[k]) for k in ("base", "val", "novel")]
    assert [len(p) for p in parts] == [4, 2, 2]
    assert set.union(*parts) == set(index.class_names) and sum(map(len, parts)) == index.num_classes
    assert split == split_classes(index, (0.5, 0.25, 0.25), seed=3)
    assert any(split_classes(index, (0.5, 0.25, 0.25), seed=s) != split for s in range(4, 10))
    by_group = split_classes(index, (0.5, 0.0, 0.5), seed=0, by="group")
    assert {c.split("/")[0] for c in by_group["base"]}.isdisjoint(
        {c.split("/")[0] for c in by_group["novel"]}
    )
    with pytest.raises(FewShotDataError, match="summing to 1"):
        split_classes(index, (0.5, 0.5, 0.5))


def test_split_roundtrip(nested_tree, tmp_path):
    split = split_classes(scan_class_folders(nested_tree), seed=1)
    save_split(tmp_path / "split.json", split, {"seed": 1})
    assert load_split(tmp_path / "split.json") == split


def test_episode_structure(nested_tree):
    index = scan_class_folders(nested_tree)
    spec = EpisodeSpec(n_way=3, k_shot=2, q_query=3, seed=7)
    episodes = sample_episodes(index, spec, 20)
    class_of = [c for _, c in index.samples()]
    for ep in episodes:
        assert len(set(ep.classes)) == 3 and len(ep.support) == 6 and len(ep.query) == 9
        assert set(ep.support).isdisjoint(ep.query)
        # Class-major layout: label i <-> classes[i], as the labels helpers say.
        assert [ep.classes[label] for label in ep.support_labels()] == [class_of[i] for i in ep.support]
        assert [ep.classes[label] for label in ep.query_labels()] == [class_of[i] for i in ep.query]
    assert episodes == sample_episodes(index, spec, 20)
    assert episodes != sample_episodes(index, EpisodeSpec(3, 2, 3, seed=8), 20)
    # Over 20 episodes more than 3 classes get drawn (the draw is not stuck on the first classes).
    assert len({c for ep in episodes for c in ep.classes}) > 3


def test_same_group_episodes(nested_tree):
    index = scan_class_folders(nested_tree)
    episodes = sample_episodes(index, EpisodeSpec(4, 1, 1, seed=0, same_group=True), 30)
    assert all(len({index.groups[c] for c in ep.classes}) == 1 for ep in episodes)
    assert {index.groups[ep.classes[0]] for ep in episodes} == {"g0", "g1"}
    with pytest.raises(FewShotDataError, match="largest group 'g[01]' has 4"):
        sample_episodes(index, EpisodeSpec(5, 1, 1, same_group=True), 1)


def test_saved_episodes_replay_exactly(nested_tree, tmp_path):
    index = scan_class_folders(nested_tree)
    spec = EpisodeSpec(4, 1, 2, seed=11, same_group=True)
    episodes = sample_episodes(index, spec, 15)
    save_episodes(tmp_path / "episodes.json", index, spec, episodes)
    record = json.loads((tmp_path / "episodes.json").read_text())
    assert record["episodes"][0]["support"][0].startswith("g")  # relative paths, readable
    loaded_spec, loaded = load_episodes(tmp_path / "episodes.json", scan_class_folders(nested_tree))
    assert loaded_spec == spec and loaded == episodes
    # On a copy of the data where an image vanished, replay refuses and names the image.
    missing = record["episodes"][0]["query"][0]
    (nested_tree / missing).unlink()
    with pytest.raises(FewShotDataError, match=f"uses image '{missing}'"):
        load_episodes(tmp_path / "episodes.json", scan_class_folders(nested_tree))


def test_class_with_fewer_than_k_plus_q_images_is_named(nested_tree):
    index = scan_class_folders(nested_tree)
    (nested_tree / "g1/c2/5.png").unlink()
    small = scan_class_folders(nested_tree)
    assert index.num_images == small.num_images + 1
    with pytest.raises(
        FewShotDataError, match=r"class 'g1/c2' has 5 images but k_shot \+ q_query = 1 \+ 5 = 6"
    ):
        sample_episodes(small, EpisodeSpec(5, 1, 5), 1)


def test_n_way_larger_than_number_of_classes(nested_tree):
    with pytest.raises(FewShotDataError, match=r"n_way=9 is larger than the number of classes \(8\)"):
        sample_episodes(scan_class_folders(nested_tree), EpisodeSpec(9, 1, 1), 1)


def test_episode_batch_sampler_epochs_and_ranks(nested_tree):
    index = scan_class_folders(nested_tree)
    spec = EpisodeSpec(3, 1, 2, seed=0)
    sampler = EpisodeBatchSampler(index, spec, episodes_per_epoch=6)
    first = list(sampler)
    assert len(first) == 6 and all(len(batch) == 9 for batch in first)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    shards = [list(EpisodeBatchSampler(index, spec, 6, rank=r, world_size=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(first) and len(shards[0]) == 3
