"""Bad-input handling of the COCO data check (issue 4, "Bad input")."""

from __future__ import annotations

import copy
import json
import math

import pytest

from tasks.detection.data_check import DatasetError, apply_policy, check_coco, load_and_check, load_coco_json


@pytest.fixture
def data(coco_root):
    return json.loads((coco_root / "annotations.json").read_text())


def kinds(problems):
    return sorted(p.kind for p in problems)


def test_clean_dataset_has_no_problems(coco_root, data):
    assert check_coco(data, coco_root / "images") == []
    clean, actions = load_and_check(coco_root / "annotations.json", coco_root / "images")
    assert actions == [] and len(clean["annotations"]) == len(data["annotations"])


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DatasetError, match=r"broken\.json.*not valid JSON \(line 2"):
        load_coco_json(path)


def test_missing_top_level_key_and_fields(tmp_path, write_json):
    with pytest.raises(DatasetError, match="missing top-level key 'categories'"):
        load_coco_json(write_json(tmp_path / "a.json", {"images": [], "annotations": []}))
    bad = {"images": [{"id": 1}], "annotations": [], "categories": []}
    with pytest.raises(DatasetError, match=r"images\[0\] lacks required field\(s\) \['file_name'\]"):
        load_coco_json(write_json(tmp_path / "b.json", bad))


def test_missing_image_file_fails_or_is_dropped(coco_root, data):
    (coco_root / "images" / "img_1.png").unlink()
    problems = check_coco(data, coco_root / "images")
    assert kinds(problems) == ["missing_file"]
    assert problems[0].file_name == "img_1.png" and problems[0].image_id == 11
    with pytest.raises(DatasetError, match=r"img_1\.png.*does not exist"):
        apply_policy(data, problems, "fail")
    clean, actions = apply_policy(data, problems, "drop")
    assert 11 not in {img["id"] for img in clean["images"]}
    assert all(a["image_id"] != 11 for a in clean["annotations"])
    assert len(clean["annotations"]) == len(data["annotations"]) - 2 and len(actions) == 1


def test_unreadable_image(coco_root, data):
    (coco_root / "images" / "img_2.png").write_bytes(b"definitely not a png")
    problems = check_coco(data, coco_root / "images")
    assert kinds(problems) == ["unreadable_image"] and problems[0].file_name == "img_2.png"


def test_size_mismatch(coco_root, data):
    data["images"][0]["width"] += 5
    assert kinds(check_coco(data, coco_root / "images")) == ["size_mismatch"]


def test_duplicate_image_ids_cannot_be_repaired(coco_root, data):
    data["images"][1]["id"] = data["images"][0]["id"]
    problems = check_coco(data, coco_root / "images")
    assert "duplicate_image_id" in kinds(problems)
    for policy in ("fail", "drop", "clip"):
        with pytest.raises(DatasetError, match="no policy can repair"):
            apply_policy(data, problems, policy)


def test_duplicate_annotation_id_and_unknown_image(coco_root, data):
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    data["annotations"][2]["image_id"] = 999
    problems = check_coco(data, coco_root / "images")
    assert kinds(problems) == ["duplicate_annotation_id", "unknown_image"]
    clean, _ = apply_policy(data, problems, "drop")
    assert len(clean["annotations"]) == len(data["annotations"]) - 2


def test_unknown_category_is_named(coco_root, data):
    data["annotations"][0]["category_id"] = 42
    problems = check_coco(data, coco_root / "images")
    assert kinds(problems) == ["unknown_category"]
    ann_id = data["annotations"][0]["id"]
    with pytest.raises(DatasetError, match=rf"annotation id {ann_id}: category_id 42 is not in 'categories'"):
        apply_policy(data, problems, "fail")
    clean, _ = apply_policy(data, problems, "drop")
    assert ann_id not in {a["id"] for a in clean["annotations"]}


@pytest.mark.parametrize(
    "bbox, kind",
    [
        ([5, 5, 0, 10], "degenerate_bbox"),
        ([5, 5, 10, -1], "degenerate_bbox"),
        ([5, math.nan, 10, 10], "bad_bbox"),
        ([5, 5, 10], "bad_bbox"),
        (["5", 5, 10, 10], "bad_bbox"),
        ([5, 5, math.inf, 10], "bad_bbox"),
    ],
)
def test_bad_boxes(coco_root, data, bbox, kind, write_json):
    data["annotations"][0]["bbox"] = bbox
    # Round trip through JSON: Python's json writes and reads NaN/Infinity, as many exporters do.
    path = write_json(coco_root / "bad.json", data)
    problems = check_coco(load_coco_json(path), coco_root / "images")
    assert kinds(problems) == [kind]
    assert problems[0].annotation_id == data["annotations"][0]["id"]
    with pytest.raises(DatasetError, match=kind):
        load_and_check(path, coco_root / "images", "fail")
    clean, _ = load_and_check(path, coco_root / "images", "drop")
    assert len(clean["annotations"]) == len(data["annotations"]) - 1


def test_box_outside_image_fail_clip_drop(coco_root, data):
    img = data["images"][0]
    ann = data["annotations"][0]
    ann["bbox"] = [img["width"] - 10, 4, 30, 8]  # 20 px past the right border
    problems = check_coco(data, coco_root / "images")
    assert kinds(problems) == ["outside_image"]
    with pytest.raises(DatasetError, match="extends outside"):
        apply_policy(data, problems, "fail")
    clipped, actions = apply_policy(data, problems, "clip")
    new = next(a for a in clipped["annotations"] if a["id"] == ann["id"])
    assert new["bbox"] == [img["width"] - 10, 4, 10, 8]
    assert any("clipped" in a for a in actions)
    dropped, _ = apply_policy(data, problems, "drop")
    assert ann["id"] not in {a["id"] for a in dropped["annotations"]}
    assert data["annotations"][0]["bbox"] == [img["width"] - 10, 4, 30, 8]  # input left untouched


def test_box_entirely_outside_is_dropped_even_when_clipping(coco_root, data):
    img = data["images"][0]
    data["annotations"][0]["bbox"] = [img["width"] + 5, 4, 10, 8]
    problems = check_coco(data, coco_root / "images")
    clean, actions = apply_policy(data, problems, "clip")
    assert data["annotations"][0]["id"] not in {a["id"] for a in clean["annotations"]}
    assert any("empty after clipping" in a for a in actions)


def test_box_within_tolerance_is_clipped_silently(coco_root, data):
    img = data["images"][0]
    data["annotations"][0]["bbox"] = [0, 0, img["width"] + 1, 10]  # VOC-style one past the edge
    assert check_coco(data, coco_root / "images") == []
    clean, _ = apply_policy(data, [], "fail")
    assert clean["annotations"][0]["bbox"][2] == img["width"]


def test_unknown_policy(data):
    with pytest.raises(ValueError, match="must be one of"):
        apply_policy(data, [], "ignore")


def test_error_lists_many_problems_briefly(tmp_path, make_coco):
    data = make_coco(tmp_path, n_images=3)
    broken = copy.deepcopy(data)
    for ann in broken["annotations"]:
        ann["bbox"] = [1, 1, 0, 0]
    with pytest.raises(DatasetError, match=r"(?s)6 problem\(s\).*and 3 more"):
        apply_policy(broken, check_coco(broken, tmp_path / "images"), max_listed=3)
