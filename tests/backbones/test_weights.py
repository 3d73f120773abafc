"""Checkpoints: torchvision and timm state dicts give identical outputs; loading reports what it did."""

import urllib.error

import pytest
import timm
import torch
import torchvision

import backbones
from backbones import create_backbone, load_pretrained
from backbones.weights import WeightsMismatchError, WeightsUnavailableError


def randomize_bn_statistics(model):
    # Fresh BN statistics are 0/1 everywhere; random ones prove the buffers really map key to key.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    return model


def save(state, tmp_path, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2"])
def test_torchvision_checkpoint_gives_identical_features_and_logits(arch, tmp_path):
    reference = randomize_bn_statistics(getattr(torchvision.models, arch)()).eval()
    path = save(reference.state_dict(), tmp_path)
    ours = create_backbone(arch, weights=str(path), out_indices=(4,), num_classes=1000).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected_features = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        features = ours(x)["layer4"]
        torch.testing.assert_close(features, expected_features, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.forward_head(features), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet50", "resnet50d", "seresnet50"])
def test_timm_checkpoint_gives_identical_logits(arch, tmp_path):
    reference = randomize_bn_statistics(timm.create_model(arch)).eval()
    path = save({"state_dict": reference.state_dict()}, tmp_path)
    ours = create_backbone(arch, weights=str(path), out_indices=(4,), num_classes=1000).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["layer4"], reference.forward_features(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.forward_head(ours(x)["layer4"]), reference(x), rtol=1e-5, atol=1e-5)


def test_classifier_of_another_size_is_dropped_with_a_message(tmp_path, caplog):
    path = save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path)
    with caplog.at_level("INFO", logger="backbones"):
        model = create_backbone("resnet18", num_classes=5)
        report = load_pretrained(model, path)
    assert report.dropped_head == ["fc.weight", "fc.bias"]
    assert report.missing == ["fc.bias", "fc.weight"]
    assert "classifier head dropped" in str(report)
    assert "dropped classifier head" in caplog.text
    feature_only = load_pretrained(create_backbone("resnet18"), path)
    assert feature_only.dropped_head == ["fc.weight", "fc.bias"] and feature_only.missing == []


def test_missing_unexpected_and_reshaped_keys_are_reported(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    del state["layer4.1.conv2.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = save(state, tmp_path)
    with pytest.raises(
        WeightsMismatchError, match=r"1 backbone tensors not in the checkpoint \(layer4.1.conv2"
    ):
        load_pretrained(create_backbone("resnet18"), path)  # a partial load needs an explicit opt-in
    report = load_pretrained(create_backbone("resnet18"), path, partial=True)
    assert report.missing == ["layer1.0.conv1.weight", "layer4.1.conv2.weight"]
    assert report.unexpected == ["extra.weight"]
    assert report.reshaped == ["layer1.0.conv1.weight"]


def test_a_deeper_resnet_is_refused_unless_partial(tmp_path):
    path = save(torchvision.models.resnet34().state_dict(), tmp_path)
    with pytest.raises(WeightsMismatchError, match=r"checkpoint tensors this backbone has no place for"):
        create_backbone("resnet18", weights=str(path))
    model = create_backbone("resnet18", weights=str(path), partial_load=True)
    assert model.load_report.counts()["unexpected"] > 0


@pytest.mark.parametrize("prefix", ["backbone.", "backbone.body.", "encoder.", "module.backbone."])
def test_the_backbone_of_a_whole_model_checkpoint_is_taken(tmp_path, prefix):
    """Classifier, Faster R-CNN, U-Net or DDP checkpoints: the backbone tensors, found by their names."""
    reference = torchvision.models.resnet18()
    whole = {prefix + k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    whole.update({"head.fc.weight": torch.zeros(7, 512), "fpn.inner.0.weight": torch.zeros(3)})
    model = create_backbone("resnet18", weights=str(save({"model": whole}, tmp_path)))
    assert model.load_report.counts() == {
        "loaded": 120,
        "missing": 0,
        "unexpected": 0,
        "reshaped": 0,
        "dropped_head": 0,
    }
    torch.testing.assert_close(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = save({"encoder.weight": torch.zeros(3)}, tmp_path)
    with pytest.raises(ValueError, match="no tensor of .* fits"):
        load_pretrained(create_backbone("resnet18"), path)


def test_in_chans_adapts_the_first_conv(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    rgb = state["conv1.weight"]
    path = save(state, tmp_path)
    gray = create_backbone("resnet18", weights=str(path), in_chans=1)
    torch.testing.assert_close(gray.conv1.weight, rgb.sum(dim=1, keepdim=True))
    five = create_backbone("resnet18", weights=str(path), in_chans=5)
    expected = torch.cat([rgb, rgb], dim=1)[:, :5] * (3 / 5)
    torch.testing.assert_close(five.conv1.weight, expected)
    deep = create_backbone("resnet50d", in_chans=1)
    report = load_pretrained(deep, save(timm.create_model("resnet50d").state_dict(), tmp_path, "d.pth"))
    assert report.adapted_input_conv.startswith("conv1.0.weight (32, 3, 3, 3) -> (32, 1, 3, 3)")


def test_torchvision_name_uses_the_hub_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    reference = randomize_bn_statistics(torchvision.models.resnet18()).eval()
    torch.save(reference.state_dict(), cached)

    def no_network(*args, **kwargs):
        raise AssertionError("a cached file must not be downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = backbones.resnet18(weights="IMAGENET1K_V1", out_indices=(4,), num_classes=1000).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model(x)["layer4"]), reference(x), rtol=1e-5, atol=1e-5)


def test_offline_error_names_the_url_and_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    expected_path = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(WeightsUnavailableError) as error:
        backbones.resnet50(weights="IMAGENET1K_V2")
    assert url in str(error.value) and str(expected_path) in str(error.value)
    with pytest.raises(WeightsUnavailableError, match="pytorch-image-models"):
        backbones.resnet50d(weights="resnet50d.ra2_in1k")


def test_unknown_weight_name_lists_what_is_accepted():
    with pytest.raises(ValueError, match=r"torchvision names for resnet50: \['IMAGENET1K_V1'"):
        backbones.resnet50(weights="IMAGENET_V9")


def test_url_source_downloads_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = save(torchvision.models.resnet18().state_dict(), tmp_path, "remote.pth")

    def fake_download(url, dst, **kwargs):  # stands in for the network: copies the "remote" file
        assert url == "https://example.org/weights/r18.pth"
        dst_path = tmp_path / "hub" / "checkpoints" / "r18.pth"
        assert str(dst_path) == dst
        dst_path.write_bytes(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    report = load_pretrained(create_backbone("resnet18"), "https://example.org/weights/r18.pth")
    assert len(report.loaded) > 100 and not report.missing


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": object()}}, path)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_pretrained(create_backbone("resnet18"), path)
