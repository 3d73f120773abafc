from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tasks.engine.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


@dataclass
class Model:
    arch: str = "resnet18"
    out_indices: tuple[int, ...] = (1, 2, 3, 4)
    weights: str | None = None
    scales: list[float] = field(default_factory=list)


@dataclass
class Cfg(RunConfig):
    model: Model = field(default_factory=Model)


def write(path, text):
    path.write_text(text)
    return path


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "runtime.yaml", "device: cpu\ntrain:\n  seed: 7\n  lr: 0.5\n")
    write(tmp_path / "model.yaml", "model:\n  arch: resnet50\n")
    cfg_file = write(
        tmp_path / "exp.yaml",
        "_base_: [runtime.yaml, model.yaml]\ntrain:\n  lr: 0.1\n  milestones: [3, 6]\n"
        "model:\n  out_indices: [2, 4]\n",
    )
    cfg = load_config(
        cfg_file, ["train.epochs=3", "model.weights=null", "train.lr=1e-3", "model.scales=[1, 2.5]"], Cfg
    )
    assert cfg.device == "cpu" and cfg.train.seed == 7  # from the base
    assert cfg.model.arch == "resnet50"  # from the second base
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)  # override beats file
    assert cfg.train.epochs == 3 and cfg.train.milestones == [3, 6]
    assert cfg.model.out_indices == (2, 4) and cfg.model.weights is None
    assert cfg.model.scales == [1.0, 2.5]
    assert cfg.train.momentum == TrainConfig().momentum  # untouched default


def test_unknown_key_suggests_closest(tmp_path):
    cfg_file = write(tmp_path / "c.yaml", "train:\n  lerning_rate: 0.1\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="train.lerning_rate"):
        load_config(cfg_file, [], Cfg)
    with pytest.raises(ConfigError, match=r"did you mean 'epochs'"):
        load_config(write(tmp_path / "d.yaml", "{}"), ["train.epoch=3"], Cfg)
    with pytest.raises(ConfigError, match=r"did you mean 'model'"):
        load_config(write(tmp_path / "e.yaml", "modle:\n  arch: x\n"), [], Cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=ten", "train.epochs: expected an integer"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.ema=yes please", "train.ema: expected true/false"),
        ("train.milestones=[1, x]", r"train.milestones\[1\]"),
        ("model.out_indices=4", "model.out_indices: expected a list"),
        ("train=3", "train: expected a mapping"),
        ("train.lr", "key=value"),
    ],
)
def test_type_errors_name_key_and_value(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "c.yaml", ""), [override], Cfg)


def test_missing_file_and_circular_base(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", [], Cfg)
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml", [], Cfg)


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(write(tmp_path / "c.yaml", "model:\n  out_indices: [3]\n"), ["train.lr=0.2"], Cfg)
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml", [], Cfg)
    assert again == cfg
    assert config_from_dict(Cfg, config_to_dict(cfg)) == cfg


def test_int_keyed_mappings_survive_a_json_round_trip():
    import json
    from dataclasses import dataclass, field

    from tasks.engine.config import config_from_dict, config_to_dict

    @dataclass
    class WithMap:
        value_map: dict[int, int] = field(default_factory=dict)

    restored = config_from_dict(WithMap, json.loads(json.dumps(config_to_dict(WithMap({0: 0, 255: 1})))))
    assert restored.value_map == {0: 0, 255: 1}


@pytest.mark.parametrize("word", ["off", "on", "yes", "no", "OFF"])
def test_yaml_1_1_booleans_stay_strings(tmp_path, word):
    """`train.amp=off` is a documented value: neither the file nor the command line may turn it into False."""
    from_file = load_config(write(tmp_path / "c.yaml", f"train:\n  amp: {word}\n"), [], Cfg)
    from_cli = load_config(write(tmp_path / "d.yaml", ""), [f"train.amp={word}"], Cfg)
    assert from_file.train.amp == from_cli.train.amp == word
    with pytest.raises(ConfigError, match=rf"train.ema: expected true/false, got '{word}'"):
        load_config(write(tmp_path / "e.yaml", ""), [f"train.ema={word}"], Cfg)
    assert load_config(write(tmp_path / "f.yaml", "train:\n  ema: True\n"), [], Cfg).train.ema is True


def test_other_libraries_names_get_a_suggestion_not_a_key_list(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lerning_rate': did you mean 'lr'\?$"):
        load_config(write(tmp_path / "c.yaml", ""), ["train.lerning_rate=0.1"], Cfg)
    with pytest.raises(ConfigError, match=r"did you mean 'epochs'\?$"):
        load_config(write(tmp_path / "d.yaml", "train:\n  max_epochs: 3\n"), [], Cfg)


def test_errors_say_where_the_value_came_from(tmp_path):
    cfg_file = write(tmp_path / "c.yaml", "train:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train.epochs: expected an integer"):
        load_config(cfg_file, [], Cfg)
    with pytest.raises(
        ConfigError, match=r"^command-line override 'train.lr=fast': train.lr: expected a number"
    ):
        load_config(write(tmp_path / "d.yaml", ""), ["train.lr=fast"], Cfg)
    with pytest.raises(
        ConfigError, match=r"^command-line override 'train.lerning_rate=0.1': unknown config key"
    ):
        load_config(write(tmp_path / "e.yaml", ""), ["train.lerning_rate=0.1"], Cfg)
