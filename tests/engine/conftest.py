"""A tiny task (no images, no backbone) so that engine tests exercise the loop in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tasks.engine import RunConfig, Task


@dataclass
class ToyModelConfig:
    width: int = 8
    norm: bool = True
    dropout: float = 0.0


@dataclass
class ToyDataConfig:
    num_samples: int = 48
    nan_at_step: int = 0  # make the loss NaN at this optimizer step (1-based; 0 = never)


@dataclass
class ToyConfig(RunConfig):
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)


class ToyTask(Task):
    """Two-class problem on 4x6x6 random tensors with a conv/BN/dropout/linear model."""

    name = "toy"
    default_best_metric = "acc"
    best_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def build_model(self):
        m = self.cfg.model
        layers = [nn.Conv2d(4, m.width, 3, padding=1)]
        if m.norm:
            layers.append(nn.BatchNorm2d(m.width))
        layers += [
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(m.dropout),
            nn.Linear(m.width, 2),
        ]
        return nn.Sequential(*layers)

    def build_datasets(self):
        g = torch.Generator().manual_seed(123)
        x = torch.randn(self.cfg.data.num_samples, 4, 6, 6, generator=g)
        y = (x[:, 0].mean((1, 2)) > 0).long()
        return TensorDataset(x, y), TensorDataset(x[:16], y[:16])

    def training_step(self, model, batch, device):
        self.calls += 1
        x, y = (t.to(device) for t in batch)
        # Random input noise exercises the RNG stream that resume must restore.
        x = x + 0.01 * torch.randn_like(x)
        loss = nn.functional.cross_entropy(model(x), y)
        if self.cfg.data.nan_at_step and self.calls == self.cfg.data.nan_at_step:
            loss = loss * float("nan")
        return {"loss": loss, "seen": torch.tensor(float(len(y)))}

    def evaluate(self, model, loader, device, run_dir, epoch):
        correct = total = 0
        loss = 0.0
        with torch.no_grad():
            for x, y in loader:
                out = model(x.to(device))
                correct += int((out.argmax(1) == y).sum())
                total += len(y)
                loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        return {"acc": correct / total, "loss": loss / total}


def make_config(tmp_path, **train) -> ToyConfig:
    cfg = ToyConfig()
    cfg.output_dir = str(tmp_path / "run")
    cfg.device = "cpu"
    cfg.train.epochs = 2
    cfg.train.batch_size = 8
    cfg.train.num_workers = 0
    cfg.train.log_every = 1
    cfg.train.tensorboard = False
    cfg.train.plots = False  # drawn once, in test_fit_writes_the_run_folder
    # Exactness checks compare fp32 results; amp=auto would turn bf16 on for CPUs with native bf16.
    cfg.train.amp = "off"
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture
def toy_config(tmp_path):
    return lambda **train: make_config(tmp_path, **train)


@pytest.fixture
def toy_task_cls():
    return ToyTask


@pytest.fixture
def toy_config_cls():
    return ToyConfig
