"""Every "Bad input" item of issue 5: a clear error naming the file, or the documented handling."""

import numpy as np
import pytest
import torch
from PIL import Image

from backbones import create_backbone
from tasks.segmentation.config import SegmentationDataConfig
from tasks.segmentation.data import SegmentationDataset, discover_records, resolve_spec, validate_mask_values
from tasks.segmentation.image_io import SegmentationDataError, read_image_and_max
from tasks.segmentation.model import UNet


def _spec(root):
    return resolve_spec(SegmentationDataConfig(root=str(root), value_map={0: 0, 255: 1}), 2)


def test_image_and_mask_of_different_sizes(binary_dataset):
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(binary_dataset / "masks" / "img3.png")
    with pytest.raises(
        SegmentationDataError, match=r"img3\.png is 48x48 \(HxW\) but its mask .*img3\.png is 40x48"
    ):
        discover_records(binary_dataset, _spec(binary_dataset), 1)


def test_mask_value_missing_from_class_map(binary_dataset):
    mask = np.zeros((48, 48), np.uint8)
    mask[0, 0] = 128
    Image.fromarray(mask).save(binary_dataset / "masks" / "img4.png")
    records = discover_records(binary_dataset, _spec(binary_dataset), 1)
    with pytest.raises(
        SegmentationDataError, match=r"img4\.png: mask values \[128\] are not in the class map"
    ):
        validate_mask_values(records, _spec(binary_dataset))


def test_image_without_mask(binary_dataset):
    (binary_dataset / "masks" / "img2.png").unlink()
    with pytest.raises(SegmentationDataError, match=r"1 image\(s\) in .*images have no mask .*: img2"):
        discover_records(binary_dataset, _spec(binary_dataset), 1)


def test_mask_without_image(binary_dataset):
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(binary_dataset / "masks" / "orphan.png")
    with pytest.raises(SegmentationDataError, match=r"1 mask\(s\) in .*masks have no image .*: orphan"):
        discover_records(binary_dataset, _spec(binary_dataset), 1)


def test_16bit_input_is_handled(binary_dataset):
    # Documented handling: 16-bit images are read with their full range and normalised like 8-bit ones.
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 20).astype(np.uint16)).save(
        binary_dataset / "images" / "img1.png"
    )
    records = discover_records(binary_dataset, _spec(binary_dataset), 1)
    ds = SegmentationDataset(records, _spec(binary_dataset), 1, "minmax")
    image = ds[1]["image"]
    assert float(image.max()) == 1.0 and float(image.min()) == 0.0 and len(image.unique()) > 256


def test_rgba_is_composited_over_white_as_in_every_task(tmp_path):
    # Documented handling (tasks.common.images): transparency is blended over white, opaque alpha dropped.
    rgba = np.full((6, 6, 4), (10, 20, 30, 255), np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "clear.png")
    image, max_value = read_image_and_max(tmp_path / "clear.png", 3)
    assert image.shape == (6, 6, 3) and max_value == 255.0
    assert image[0, 0].tolist() == [255, 255, 255] and image[1, 1].tolist() == [10, 20, 30]


def test_rgb_image_for_single_channel_model(tmp_path):
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(
        SegmentationDataError, match=r"rgb\.png: image has 3 channels, but model.backbone.in_chans=1"
    ):
        read_image_and_max(tmp_path / "rgb.png", 1)


def test_image_smaller_than_network_stride_is_padded():
    # Documented handling: the model pads to its stride (32) and crops back; no shape error.
    model = UNet(
        create_backbone("resnet18", out_indices=(0, 1, 2, 3, 4), in_chans=1),
        2,
        decoder_channels=(16, 16, 16, 16, 16),
    ).eval()
    for size in [(7, 9), (31, 33), (1, 1)]:
        assert model(torch.randn(1, 1, *size)).shape == (1, 2, *size)


def test_colour_coded_mask_is_an_error(binary_dataset):
    colour = np.zeros((48, 48, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(binary_dataset / "masks" / "img0.png")
    records = discover_records(binary_dataset, _spec(binary_dataset), 1)
    with pytest.raises(SegmentationDataError, match=r"img0\.png: mask is a colour image"):
        validate_mask_values(records, _spec(binary_dataset))


def test_missing_folder_and_duplicate_stems(tmp_path, binary_dataset):
    with pytest.raises(SegmentationDataError, match="image folder not found"):
        discover_records(tmp_path / "nowhere", _spec(tmp_path), 1)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(binary_dataset / "images" / "img0.tif")
    with pytest.raises(SegmentationDataError, match="two image files with the stem 'img0'"):
        discover_records(binary_dataset, _spec(binary_dataset), 1)


def test_num_classes_disagrees_with_manifest(multiclass_dataset):
    with pytest.raises(SegmentationDataError, match=r"3 classes .* but model.num_classes=2"):
        resolve_spec(SegmentationDataConfig(root=str(multiclass_dataset), manifest="dataset.json"), 2)
