"""Pascal VOC XML -> COCO conversion (library and tools/voc2coco.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from tasks.detection.voc import voc_to_coco

TOOL = Path(__file__).resolve().parents[2] / "tools" / "voc2coco.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("voc2coco_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_xml(path: Path, filename: str, objects, size=(64, 48)):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in objects
    )
    size_xml = (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    )
    path.write_text(f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>")


@pytest.fixture
def voc_dir(tmp_path):
    xml = tmp_path / "xml"
    xml.mkdir()
    write_xml(xml / "a.xml", "a.jpg", [("dog", 0, (10, 5, 30, 25)), ("cat", 1, (1, 1, 8, 8))])
    write_xml(xml / "b.xml", "b.jpg", [("cat", 0, (2, 3, 12, 13))], size=None)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "b.jpg")
    return tmp_path


def test_convert_boxes_classes_and_difficult(voc_dir):
    data = voc_to_coco(voc_dir / "xml", image_dir=voc_dir / "images")
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert data["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
    ]  # size from the file
    dog, difficult_cat, cat = data["annotations"]
    assert (
        dog["bbox"] == [10, 5, 20, 20]
        and dog["category_id"] == 2
        and dog["area"] == 400
        and dog["iscrowd"] == 0
    )
    assert difficult_cat["iscrowd"] == 1  # ignored by COCOeval, as difficult objects are by the VOC metric
    assert cat["image_id"] == 2 and cat["bbox"] == [2, 3, 10, 10]


def test_options(voc_dir):
    one_based = voc_to_coco(voc_dir / "xml", image_dir=voc_dir / "images", one_based=True)
    assert one_based["annotations"][0]["bbox"] == [9, 4, 21, 21]
    dropped = voc_to_coco(voc_dir / "xml", image_dir=voc_dir / "images", difficult="drop")
    assert len(dropped["annotations"]) == 2
    ordered = voc_to_coco(voc_dir / "xml", image_dir=voc_dir / "images", classes=["dog", "cat", "bird"])
    assert [c["name"] for c in ordered["categories"]] == ["dog", "cat", "bird"]
    with pytest.raises(ValueError, match=r"\['dog'\] are not in the given classes"):
        voc_to_coco(voc_dir / "xml", image_dir=voc_dir / "images", classes=["cat"])


def test_bad_input(tmp_path, voc_dir):
    with pytest.raises(ValueError, match="no .xml files"):
        voc_to_coco(tmp_path)
    with pytest.raises(ValueError, match="no usable <size>"):
        voc_to_coco(voc_dir / "xml")  # b.xml has no size and no image folder was given
    (voc_dir / "xml" / "c.xml").write_text("<annotation><filename>c.jpg</filename>")
    with pytest.raises(ValueError, match=r"c\.xml.*not valid XML"):
        voc_to_coco(voc_dir / "xml", image_dir=voc_dir / "images")


def test_tool_writes_json(voc_dir, capsys):
    out = voc_dir / "out" / "coco.json"
    assert load_tool().main([str(voc_dir / "xml"), str(out), "--images", str(voc_dir / "images")]) == 0
    assert len(json.loads(out.read_text())["annotations"]) == 3
    assert load_tool().main([str(voc_dir / "missing"), str(out)]) == 2
    assert "no .xml files" in capsys.readouterr().err
