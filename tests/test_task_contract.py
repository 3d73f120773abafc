"""The contract every registered task keeps: train, evaluate, save, reload through the one loader, and
hand its backbone to every other task.

One test per task and one per ordered pair of tasks, all on the synthetic shapes of tasks/shapes.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from backbones import ResNet
from backbones.weights import extract_backbone
from tasks.engine import Trainer, load_checkpoint
from tasks.engine.config import load_config
from tasks.engine.loading import load_trained_model
from tasks.engine.registry import registered_tasks
from tasks.shapes import make_all

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "demo"
# One tiny run per task: the demo config, one optimizer step, a small evaluation, fp32 (exact reload).
TINY = [
    "model.backbone.arch=resnet18",
    "train.epochs=1",
    "train.max_steps_per_epoch=1",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.amp=off",
    "train.plots=false",
    "train.tensorboard=false",
]
EXTRA = {
    "fewshot": ["data.val_episodes=4", "data.val_q_query=2", "data.split_fractions=[0.6,0.1,0.3]"],
    "segmentation": ["eval.overlays=0"],
    "detection": ["data.num_vis_images=0"],
}
TASKS = sorted(registered_tasks())


def example_input(name: str) -> object:
    """A fixed input of the size the task's demo data has (the model's forward takes it)."""
    g = torch.Generator().manual_seed(0)
    if name == "detection":
        return [torch.rand(3, 96, 96, generator=g)]
    size = 32 if name == "fewshot" else 64
    return torch.rand(2, 3, size, size, generator=g)


def backbone_of(model: torch.nn.Module) -> ResNet:
    return next(m for m in model.modules() if isinstance(m, ResNet))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Each task trained for one step on its shapes data: the trainer and its last.pt."""
    root = tmp_path_factory.mktemp("contract")
    data = make_all(root / "data", scale=0.05)
    out = {}
    for name in TASKS:
        overrides = [*TINY, *EXTRA.get(name, []), f"data.root={data[name]}", f"output_dir={root / name}"]
        cfg = load_config(CONFIGS / f"{name}.yaml", overrides, registered_tasks()[name].config_cls)
        trainer = Trainer(cfg, registered_tasks()[name](cfg))
        summary = trainer.fit()
        out[name] = {
            "trainer": trainer,
            "summary": summary,
            "checkpoint": root / name / "checkpoints" / "last.pt",
        }
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_train_evaluate_save_and_reload_give_identical_outputs(runs, name):
    run = runs[name]
    ckpt = load_checkpoint(run["checkpoint"])
    assert run["summary"]["global_step"] == 1 and run["summary"]["best_metric"] in ckpt["metrics"]
    assert ckpt["task"]["name"] == name and ckpt["task_meta"]  # the file says what it holds
    loaded = load_trained_model(run["checkpoint"])
    assert loaded.task.name == name and loaded.meta == ckpt["task_meta"]
    reference = run["trainer"]._eval_model().eval()
    x = example_input(name)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_the_predict_tools_model_folds_every_batchnorm_and_gives_the_same_outputs(runs, name):
    loaded = load_trained_model(runs[name]["checkpoint"])
    folded = loaded.inference_model()
    norms = (torch.nn.BatchNorm2d, FrozenBatchNorm2d)
    assert not any(isinstance(m, norms) for m in folded.modules())
    assert any(isinstance(m, norms) for m in loaded.model.modules())  # the loaded model is left as it was
    x = example_input(name)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), loaded.model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("source", "target"), [(s, t) for s in TASKS for t in TASKS if s != t])
def test_a_backbone_trained_in_one_task_loads_into_every_other(runs, tmp_path, source, target):
    checkpoint = runs[source]["checkpoint"]
    cfg = copy.deepcopy(runs[target]["trainer"].cfg)
    cfg.output_dir = str(tmp_path / "run")
    cfg.model.backbone.weights = str(checkpoint)
    trainer = Trainer(cfg, registered_tasks()[target](cfg))
    model = trainer.model
    report = backbone_of(model).load_report
    assert report.counts()["loaded"] > 100 and report.backbone_problems() == []
    trained = extract_backbone(load_checkpoint(checkpoint)["model"])
    own = backbone_of(model).state_dict()
    shared = [k for k in own if k in trained and not k.startswith("fc.")]
    assert len(shared) == report.counts()["loaded"]
    for key in shared:
        assert torch.equal(own[key], trained[key]), key
    if source == TASKS[0]:  # the report reaches the run folder (one pair is enough to show it)
        trainer.fit()
        written = json.loads((Path(cfg.output_dir) / "weights_report.json").read_text())
        assert written[0]["source"].startswith(str(checkpoint)) and written[0]["loaded"] == len(shared)
