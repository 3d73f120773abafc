"""Pretrained weights: torchvision names, timm names, local files and URLs.

Every source ends up as a file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``) or a local path, is
read with ``torch.load(weights_only=True)`` (or safetensors), and loads with a report of missing,
unexpected and reshaped keys. Downloading happens only when a name or URL was given; offline, the error
names the URL and the exact cache path where the file can be put by hand.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .dcn import offset_predictor_keys
from .errors import UserError
from .resnet import ARCHS, ResNet

log = logging.getLogger("backbones")

CLASSIFIER_PREFIX = "fc."
# Wrappers other training code puts around a state dict, checked in this order.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "module")
PREFIXES = ("module.", "backbone.", "encoder.", "model.")
# Every ResNet of the family has this tensor; whatever stands before it in a key is the prefix under which
# a whole model (classifier, Faster R-CNN, U-Net, few-shot learner) keeps its backbone.
BACKBONE_ANCHOR = "layer1.0.conv1.weight"


class WeightsMismatchError(UserError):
    """A weights file that does not fit: unreadable, no state dict, or only part of the backbone (and the
    caller did not allow a partial load)."""


class WeightsUnavailableError(UserError):
    """Raised when a checkpoint must be downloaded but cannot be (offline machine, firewall, ...)."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a backbone."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    dropped_head: list[str] = field(default_factory=list)
    # New layers a plain checkpoint has no tensors for and that start at a value that keeps the network
    # the checkpoint's (the zero offset predictors of deformable convs): not missing.
    initialised: list[str] = field(default_factory=list)
    adapted_input_conv: str | None = None

    def backbone_problems(self) -> list[str]:
        """What keeps this from being a full load of the backbone (the classifier head does not count)."""
        problems = []
        reshaped = set(self.reshaped)
        for what, keys in (
            ("backbone tensors not in the checkpoint", [k for k in self.missing if k not in reshaped]),
            ("checkpoint tensors this backbone has no place for", self.unexpected),
            ("tensors of another shape", self.reshaped),
        ):
            # num_batches_tracked does not affect outputs; FrozenBatchNorm2d and old checkpoints lack it.
            keys = [
                k
                for k in keys
                if not k.startswith(CLASSIFIER_PREFIX) and not k.endswith("num_batches_tracked")
            ]
            if keys:
                shown = ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")
                problems.append(f"{len(keys)} {what} ({shown})")
        return problems

    def counts(self) -> dict[str, int]:
        """Tensor counts per outcome, for logs and the run folder's weights report."""
        return {
            "loaded": len(self.loaded),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "reshaped": len(self.reshaped),
            "dropped_head": len(self.dropped_head),
        }

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        for title, keys in (
            ("missing (left at their initial values)", self.missing),
            ("unexpected (ignored)", self.unexpected),
            ("reshaped (shape differs, left at initial values)", self.reshaped),
            ("classifier head dropped", self.dropped_head),
            ("new layers at their zero start (deformable offsets)", self.initialised),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                lines.append(f"  {title}: {shown}")
        if self.adapted_input_conv:
            lines.append(f"  first conv adapted: {self.adapted_input_conv}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- resolution
def hub_cache_dir() -> Path:
    """Where downloaded checkpoints live: torch hub's cache, shared with torchvision and timm."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_url(arch: str, name: str) -> str | None:
    """URL of a torchvision weight name ("IMAGENET1K_V2", "DEFAULT", "ResNet50_Weights.IMAGENET1K_V1")."""
    tv_arch = ARCHS.get(arch, ({}, None))[1]
    if tv_arch is None:
        return None
    from torchvision.models import get_model_weights

    enum = get_model_weights(tv_arch)
    short = name.split(".", 1)[1] if name.startswith(enum.__name__ + ".") else name
    if short in enum.__members__:
        return enum[short].url
    return None


def timm_url(name: str) -> str | None:
    """URL of a timm pretrained tag ("resnet50.a1_in1k", "timm/resnet50d.ra2_in1k", "resnet50d")."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name.removeprefix("timm/"))
    if cfg is None:
        return None
    if cfg.url:
        return cfg.url
    if cfg.hf_hub_id:
        return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    return None


def resolve_source(source: str | os.PathLike, arch: str | None = None) -> str:
    """Turn a weights argument into a local path or a URL, or raise ``ValueError`` saying what is accepted."""
    text = str(source)
    if Path(text).expanduser().exists():
        return str(Path(text).expanduser())
    if text.startswith(("http://", "https://", "file://")):
        return text
    if arch is not None:
        url = torchvision_url(arch, text)
        if url:
            return url
    url = timm_url(text)
    if url:
        return url
    tv_names = ""
    if arch is not None and ARCHS.get(arch, ({}, None))[1]:
        from torchvision.models import get_model_weights

        tv_names = f" torchvision names for {arch}: {list(get_model_weights(ARCHS[arch][1]).__members__)};"
    raise WeightsUnavailableError(
        f"weights={text!r} is neither an existing file, a URL, a torchvision weight name nor a timm "
        f"pretrained tag.{tv_names} timm tags look like 'resnet50.a1_in1k'."
    )


def cached_file(url: str, download: bool = True) -> Path:
    """Return the local copy of ``url`` in the hub cache, downloading it only if allowed and missing."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path)
    filename = Path(parsed.path).name
    if "huggingface.co" in parsed.netloc:  # every HF file is called model.safetensors: keep the repo id
        filename = parsed.path.strip("/").split("/resolve/")[0].replace("/", "--") + "-" + filename
    path = hub_cache_dir() / filename
    if path.exists():
        return path
    hint = f"Download {url} yourself and put it at {path}"
    if not download:
        raise WeightsUnavailableError(f"{path} is not cached and downloading is disabled. {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except (urllib.error.URLError, OSError, ConnectionError) as error:
        raise WeightsUnavailableError(f"could not download {url} ({error}). {hint}") from error
    return path


# ----------------------------------------------------------------------------------------- reading
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and unwrap the usual containers and prefixes."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle errors, truncated files, non-tensor payloads
            raise WeightsMismatchError(f"cannot read checkpoint {path}: {error}") from error
    for key in STATE_DICT_KEYS:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(f"{path} does not hold a state dict of tensors")
    return extract_backbone(state)


def extract_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a whole model's state dict, with the backbone's own key names.

    The backbone is found by its tensor names, not by task: ``backbone.`` (classifier, few-shot),
    ``backbone.body.`` (Faster R-CNN), ``encoder.`` (U-Net), ``module.`` (DDP) or none (a torchvision or
    timm ResNet, whose classifier head is then kept). Tensors outside the backbone (heads, FPN, decoder)
    are left out. A state dict without a ResNet layout falls back to stripping a common wrapper prefix.
    """
    anchored = [k[: -len(BACKBONE_ANCHOR)] for k in state if k.endswith(BACKBONE_ANCHOR)]
    prefixes = [p for p in anchored if p == "" or p.endswith(".")]
    if prefixes:
        prefix = min(prefixes, key=len)
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def convert_timm_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map timm ResNet-family keys to ours.

    timm's ResNet (including -D and SE variants) already uses torchvision's layout, and ours copies timm's
    for the deep stem (``conv1.0/1/3/4/6``), the average-pool shortcut (``downsample.1/2``) and SE
    (``se.fc1/fc2``); only heads named the timm way need renaming.
    """
    renames = {"head.fc.": "fc.", "classifier.": "fc."}
    converted = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        converted[key] = value
    return converted


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB first-conv weights for ``in_chans`` inputs: 1 channel sums RGB, C channels repeat and scale 3/C."""
    from timm.models import adapt_input_conv  # same rule timm uses, so weights match timm's

    return adapt_input_conv(in_chans, weight)


def first_conv_key(model: ResNet) -> str:
    """State-dict key of the first convolution (``conv1.weight`` or ``conv1.0.weight`` for deep stems)."""
    return "conv1.0.weight" if isinstance(model.conv1, nn.Sequential) else "conv1.weight"


# ----------------------------------------------------------------------------------------- loading
def load_state_dict_report(
    model: ResNet, state: dict[str, torch.Tensor], source: str, partial: bool = False
) -> LoadReport:
    """Load ``state`` into ``model`` and report what happened.

    A classifier head of another size is dropped with a message. Anything else that does not fit (backbone
    tensors missing, unexpected or of another shape: another architecture, or weights for another
    ``in_chans`` layout) is an error unless ``partial``; a checkpoint of which no backbone tensor fits
    is always an error. The report is kept as ``model.load_report``.
    """
    report = LoadReport(source=source)
    own = model.state_dict()
    conv_key = first_conv_key(model)
    if conv_key in state and conv_key in own and state[conv_key].shape[1] != own[conv_key].shape[1]:
        before = tuple(state[conv_key].shape)
        state = {**state, conv_key: adapt_first_conv(state[conv_key], own[conv_key].shape[1])}
        report.adapted_input_conv = f"{conv_key} {before} -> {tuple(state[conv_key].shape)}"

    usable = {}
    for key, value in state.items():
        if key not in own:
            (report.dropped_head if key.startswith(CLASSIFIER_PREFIX) else report.unexpected).append(key)
        elif own[key].shape != value.shape:
            (report.dropped_head if key.startswith(CLASSIFIER_PREFIX) else report.reshaped).append(key)
        else:
            usable[key] = value
    report.loaded = sorted(usable)
    fresh = set(offset_predictor_keys(model))
    report.initialised = sorted(fresh - set(usable))
    report.missing = sorted(
        k for k in own if k not in usable and k not in fresh and not k.endswith("num_batches_tracked")
    )
    # num_batches_tracked may be absent from older checkpoints; it does not affect outputs.
    backbone_keys = [k for k in own if not k.startswith(CLASSIFIER_PREFIX)]
    if not any(k in usable for k in backbone_keys):
        raise WeightsMismatchError(
            f"no tensor of {source} fits this {model.depth}-layer ResNet: is it a checkpoint of another "
            f"architecture? First keys: {list(state)[:5]}"
        )
    problems = report.backbone_problems()
    if problems and not partial:
        raise WeightsMismatchError(
            f"{source} fills only part of this {model.depth}-layer ResNet: {'; '.join(problems)}. "
            "Is it a checkpoint of another architecture? Allow a partial load explicitly "
            "(partial_load=True; in a config: model.backbone.partial_load=true) to load what fits."
            + _deformable_hint(report.unexpected)
        )
    model.load_state_dict(usable, strict=False)
    model.load_report = report
    if report.dropped_head:
        log.info(
            "dropped classifier head %s (model has num_classes=%d)", report.dropped_head, model.num_classes
        )
    if report.missing or report.reshaped or report.unexpected:
        log.warning("%s", report)
    else:
        log.info("%s", report)
    return report


def _deformable_hint(unexpected: list[str]) -> str:
    """A pointer to ``dcn_stages`` when the checkpoint has deformable convs that the model lacks."""
    levels = sorted({int(key[5]) for key in unexpected if key.startswith("layer") and ".conv_offset." in key})
    if not levels:
        return ""
    layers = ", ".join(f"layer{level}" for level in levels)
    return (
        f" The checkpoint has deformable convs in {layers}: build the backbone with dcn_stages={levels} "
        f"(in a config: model.backbone.dcn_stages={levels})."
    )


def load_pretrained(
    model: ResNet,
    source: str | os.PathLike,
    arch: str | None = None,
    download: bool = True,
    partial: bool = False,
) -> LoadReport:
    """Load weights into ``model`` from a torchvision name, a timm name, a local file or a URL.

    Args:
        model: the backbone.
        source: "IMAGENET1K_V2", "DEFAULT", "resnet50.a1_in1k", "/path/ckpt.pth", "https://...".
        arch: architecture name (needed to resolve torchvision weight names).
        download: allow a download when the file is not cached yet.
        partial: accept a checkpoint that fills only part of the backbone (see `load_state_dict_report`).

    Returns:
        A :class:`LoadReport` (also logged).
    """
    location = resolve_source(source, arch)
    is_remote = location.startswith(("http://", "https://", "file://"))
    path = cached_file(location, download=download) if is_remote else Path(location)
    # The timm converter leaves torchvision keys untouched, so it is safe for every source.
    state = convert_timm_state_dict(read_state_dict(path))
    return load_state_dict_report(model, state, source=f"{source} ({path})", partial=partial)
