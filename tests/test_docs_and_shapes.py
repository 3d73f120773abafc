"""docs/configs.md matches the schemas; the synthetic shapes data is valid in each task's format."""

import json

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from tasks.shapes import DETECTION_CATEGORY_IDS, make_all
from tools import gen_config_docs, make_shapes


def test_config_reference_is_current():
    assert gen_config_docs.main(["--check"]) == 0, "run: python tools/gen_config_docs.py"


def test_config_reference_documents_nested_keys():
    text = gen_config_docs.render()
    for key in ("`train.lr`", "`model.backbone.arch`", "`data.root`", "`output_dir`"):
        assert key in text


def test_make_shapes_writes_every_format(tmp_path, capsys):
    assert make_shapes.main([str(tmp_path), "--scale", "0.1"]) == 0
    assert "segmentation" in capsys.readouterr().out
    folders = make_all(tmp_path / "again", scale=0.1)
    coco = COCO(str(folders["detection"] / "annotations.json"))
    assert sorted(coco.getCatIds()) == sorted(DETECTION_CATEGORY_IDS.values())
    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann["bbox"]
        image = coco.loadImgs(ann["image_id"])[0]
        assert w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]
    mask = np.asarray(Image.open(next((folders["segmentation"] / "masks").glob("*.png"))))
    assert set(np.unique(mask)) <= {0, 1, 2, 3} and len(np.unique(mask)) >= 2
    classes = [p for p in folders["fewshot"].glob("*/*") if p.is_dir()]
    assert len(classes) == 80 and all(len(list(c.glob("*.png"))) == 4 for c in classes)
    assert sorted(p.name for p in (folders["classification"] / "train").iterdir()) == [
        "circle",
        "square",
        "triangle",
    ]
    # same seed, same bytes
    first = (tmp_path / "detection" / "annotations.json").read_text()
    assert json.loads(first) == json.loads((folders["detection"] / "annotations.json").read_text())
