"""U-Net on our backbone: equivalence with smp.Unet, shapes for every mode, decoder options, smp interop."""

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from backbones import create_backbone
from tasks.common.backbone import BackboneConfig
from tasks.segmentation.config import SegmentationModelConfig
from tasks.segmentation.model import UNet, build_unet
from tasks.segmentation.smp_parts import decoder_features, register_encoder

LEVELS = (0, 1, 2, 3, 4)
SMALL = (32, 16, 16, 16, 16)


def _unet(**kw):
    in_chans = kw.pop("in_chans", 1)
    out = kw.pop("out_channels", 2)
    return UNet(
        create_backbone("resnet18", out_indices=LEVELS, in_chans=in_chans),
        out,
        **{"decoder_channels": SMALL, **kw},
    )


def test_same_weights_same_output_as_smp_unet():
    # Anchor: smp.Unet("resnet18") is a torchvision ResNet + UnetDecoder + head. Our backbone uses torchvision
    # names, so smp's weights load into our U-Net with only the "encoder." -> "encoder.backbone." rename.
    reference = smp.Unet(
        "resnet18", encoder_weights=None, in_channels=3, classes=3, decoder_channels=SMALL
    ).eval()
    ours = _unet(in_chans=3, out_channels=3).eval()
    state = {
        (k.replace("encoder.", "encoder.backbone.", 1) if k.startswith("encoder.") else k): v
        for k, v in reference.state_dict().items()
    }
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and not missing
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_decoder_features_matches_smp_forward():
    model = _unet().eval()
    feats = model.encoder(torch.randn(1, 1, 64, 64))
    with torch.no_grad():
        outputs = decoder_features(model.decoder, feats)
        torch.testing.assert_close(outputs[-1], model.decoder(feats))
    assert [o.shape[-1] for o in outputs] == [4, 8, 16, 32, 64]


@pytest.mark.parametrize(
    "mode,num_classes,regions,channels",
    [("binary", 2, [], 1), ("multiclass", 4, [], 4), ("multilabel", 4, [[1, 2, 3], [2, 3], [3]], 3)],
)
def test_modes_and_odd_sizes(mode, num_classes, regions, channels):
    cfg = SegmentationModelConfig(
        backbone=BackboneConfig(arch="resnet18", in_chans=2),
        num_classes=num_classes,
        mode=mode,
        regions=regions,
        decoder_channels=list(SMALL),
    )
    model = build_unet(cfg).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 45, 70)).shape == (1, channels, 45, 70)


def test_deep_supervision_returns_coarser_heads_in_training_only():
    model = _unet(deep_supervision=2)
    logits, aux = model(torch.randn(2, 1, 50, 64))
    assert logits.shape == (2, 2, 50, 64)
    assert [a.shape[-2:] for a in aux] == [(25, 32), (13, 16)]
    assert model.eval()(torch.randn(1, 1, 50, 64)).shape == (1, 2, 50, 64)


@pytest.mark.parametrize(
    "norm,kind",
    [("groupnorm", nn.GroupNorm), ("instancenorm", nn.InstanceNorm2d), ("batchnorm", nn.BatchNorm2d)],
)
def test_decoder_norms(norm, kind):
    model = _unet(decoder_norm=norm, decoder_norm_groups=4)
    norms = [
        m for m in model.decoder.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d))
    ]
    assert norms and all(type(m) is kind for m in norms)
    model(torch.randn(1, 1, 64, 64)).sum().backward()  # a batch of 1 trains with GN/IN in the decoder


def test_scse_attention_and_decoder_width_checks():
    model = _unet(decoder_attention="scse")
    assert any(type(m).__name__ == "SCSEModule" for m in model.modules())
    with pytest.raises(ValueError, match="scse"):
        _unet(decoder_attention="scse", decoder_channels=(32, 16, 16, 8, 8))
    with pytest.raises(ValueError, match="decoder_channels has 3 entries"):
        _unet(decoder_channels=(32, 16, 16))
    with pytest.raises(ValueError, match="decoder_norm"):
        _unet(decoder_norm="layer")


def test_encoder_depth_and_frozen_stages():
    cfg = SegmentationModelConfig(
        backbone=BackboneConfig(arch="resnet18", in_chans=1, frozen_stages=1),
        encoder_depth=4,
        decoder_channels=[32, 16, 16, 16],
    )
    with pytest.warns(UserWarning, match="frozen"):
        model = build_unet(cfg).train()
    assert model.stride == 16
    frozen = [p.requires_grad for p in model.encoder.backbone.layer1.parameters()]
    assert not any(frozen) and all(p.requires_grad for p in model.encoder.backbone.layer2.parameters())
    assert model(torch.randn(2, 1, 40, 40)).shape == (2, 2, 40, 40)
    with pytest.raises(ValueError, match="binary needs model.num_classes=2"):
        build_unet(
            SegmentationModelConfig(backbone=BackboneConfig(arch="resnet18"), mode="binary", num_classes=3)
        )
    with pytest.raises(ValueError, match="regions"):
        build_unet(
            SegmentationModelConfig(
                backbone=BackboneConfig(arch="resnet18"), mode="multilabel", num_classes=3
            )
        )


def test_our_encoder_inside_smp_models():
    # docs/segmentation.md (run by tests/test_readme.py) builds Unet, FPN and DeepLabV3+ by name; here the
    # encoder object smp ends up with, and DeepLabV3+'s request for output stride 16 (served by dilation).
    name = register_encoder("ours-resnet18", "resnet18")
    deeplab = smp.DeepLabV3Plus(name, encoder_weights=None, in_channels=1, classes=3).eval()
    assert type(deeplab.encoder).__name__ == "BackboneEncoder"
    assert deeplab.encoder.output_stride == 16 and deeplab.encoder.backbone.feature_info.strides[-1] == 16
    assert deeplab.encoder.out_channels == [1, 64, 64, 128, 256, 512]
    with torch.no_grad():
        assert deeplab(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="smp's own encoders"):
        register_encoder("resnet18", "resnet18")
