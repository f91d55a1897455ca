from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import coco_run, invoke, make_coco, make_coco20k, make_voc, refused

from objdisc.datasets import DatasetError, load_dataset
from objdisc.datasets.voc import voc_image_id


@pytest.mark.parametrize(("stem", "expected"), [("000005", 5), ("2008_000123", 2008000123)])
def test_voc_image_ids(stem: str, expected: int):
    assert voc_image_id(stem) == expected


def test_voc_gt_keeps_every_object_and_shifts_to_zero_based(tmp_path: Path):
    objects = make_voc(tmp_path)
    dataset = load_dataset("voc07", tmp_path)
    assert [r.image_id for r in dataset.records] == [5, 7, 9, 12]
    first = dataset.records[0]
    x1, y1, x2, y2 = objects["000005"][0]["box"]
    np.testing.assert_array_equal(first.gt_boxes, [[x1 - 1, y1 - 1, x2, y2]])
    assert (first.height, first.width) == (75, 100)
    assert len(dataset.records[1].gt_boxes) == 2  # the difficult one is kept
    assert len(dataset.records[2].gt_boxes) == 1  # the truncated one is kept


def test_voc_no_hard_drops_hard_objects_and_excludes_empty_images(tmp_path: Path):
    make_voc(tmp_path)
    dataset = load_dataset("voc07", tmp_path, no_hard=True)
    assert [r.image_id for r in dataset.records] == [5, 7, 12]
    assert len(dataset.records[1].gt_boxes) == 1
    assert dataset.excluded == [{"image_id": 9, "file_name": "000009.jpg", "reason": "no object left by --no-hard"}]


def test_voc12_and_split(tmp_path: Path):
    make_voc(tmp_path, "2012")
    (tmp_path / "VOCdevkit/VOC2012/ImageSets/Main/val.txt").write_text("2009_000001\n")
    dataset = load_dataset("voc12", tmp_path, split="val")
    assert [r.image_id for r in dataset.records] == [2009000001]


def test_malformed_xml_is_a_per_image_error(tmp_path: Path):
    make_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2007/Annotations/000007.xml").write_text("<annotation><object>")
    (tmp_path / "VOCdevkit/VOC2007/Annotations/000012.xml").unlink()
    records = load_dataset("voc07", tmp_path).records
    assert records[0].error is None
    assert "000007.xml" in records[1].error and "cannot read VOC annotation" in records[1].error
    assert "000012.xml" in records[3].error


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("VOCdevkit/VOC2007/JPEGImages", "JPEGImages: not found; expected the VOC2007 JPEG images"),
        ("VOCdevkit/VOC2007/ImageSets/Main/trainval.txt", "trainval.txt: not found"),
        ("VOCdevkit", "VOCdevkit/VOC2007: not found"),
    ],
)
def test_missing_voc_paths_are_named(tmp_path: Path, remove: str, expected: str):
    import shutil

    make_voc(tmp_path)
    target = tmp_path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetError, match=expected):
        load_dataset("voc07", tmp_path)


def test_empty_split_file(tmp_path: Path):
    make_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt").write_text("\n")
    with pytest.raises(DatasetError, match="lists no images"):
        load_dataset("voc07", tmp_path)


def test_data_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    make_voc(tmp_path)
    monkeypatch.setenv("OBJDISC_DATA_ROOT", str(tmp_path))
    assert len(load_dataset("voc07").records) == 4
    monkeypatch.delenv("OBJDISC_DATA_ROOT")
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset("voc07")


def test_coco_gt_drops_crowd_and_rounds(tmp_path: Path):
    images, annotations, data = make_coco(tmp_path, [9, 25, 30])
    dataset = load_dataset("coco", images=images, annotations=annotations)
    assert [r.image_id for r in dataset.records] == [9, 25, 30]
    x, y, w, h = data["annotations"][0]["bbox"]
    np.testing.assert_array_equal(dataset.records[0].gt_boxes, [[round(x), round(y), round(x + w), round(y + h)]])
    assert dataset.records[0].path == images / "000000000009.jpg"


def test_coco_json_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: not a readable COCO json"):
        load_dataset("coco", images=tmp_path, annotations=bad)
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError, match="no 'images' list"):
        load_dataset("coco", images=tmp_path, annotations=bad)


@pytest.mark.parametrize("selected", [False, True])
def test_coco20k_follows_the_list(tmp_path: Path, selected: bool):
    make_coco20k(tmp_path, [9, 25, 30, 34], listed=[30, 9, 34], selected=selected)
    dataset = load_dataset("coco20k", tmp_path)
    assert [r.image_id for r in dataset.records] == [30, 9, 34]
    assert dataset.records[0].path == tmp_path / "COCO/images/train2014/COCO_train2014_000000000030.jpg"
    assert len(dataset.records[1].gt_boxes) == 1  # the crowd box of image 9 is dropped


def test_coco20k_listed_image_without_entry_is_an_error_record(tmp_path: Path):
    make_coco20k(tmp_path, [9, 25], listed=[9, 77])
    records = load_dataset("coco20k", tmp_path).records
    assert records[1].image_id == 77 and "no image entry for id 77" in records[1].error


def test_folder_lists_images_recursively_with_positional_ids(tmp_path: Path):
    from conftest import write_image

    write_image(tmp_path / "b.jpg", (20, 30), (1, 1, 5, 5))
    write_image(tmp_path / "sub" / "a.png", (20, 30), (1, 1, 5, 5))
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = load_dataset("folder", images=tmp_path)
    assert [(r.image_id, r.file_name) for r in dataset.records] == [(1, "b.jpg"), (2, "sub/a.png")]
    assert not dataset.has_gt and dataset.records[0].gt_boxes is None


def test_folder_without_images(tmp_path: Path):
    with pytest.raises(DatasetError, match="no image files"):
        load_dataset("folder", images=tmp_path)


def test_malformed_coco_entry_names_the_file(tmp_path: Path):
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps({"images": [{"file_name": "a.jpg"}], "annotations": []}))
    with pytest.raises(DatasetError, match=r"instances\.json: malformed COCO entry \(KeyError"):
        load_dataset("coco", images=tmp_path, annotations=bad)


def test_duplicates_and_boxes_outside_the_image_are_kept_once_and_reported(tmp_path: Path):
    from conftest import voc_xml

    make_voc(tmp_path)
    base = tmp_path / "VOCdevkit/VOC2007"
    (base / "ImageSets/Main/trainval.txt").write_text("000005\n000007\n000005\n000009\n000012\n")
    (base / "Annotations/000009.xml").write_text(voc_xml("000009", (100, 75), [{"box": (1, 1, 90, 120)}]))
    dataset = load_dataset("voc07", tmp_path)
    assert [r.image_id for r in dataset.records] == [5, 7, 9, 12]
    messages = {(w["file_name"], w["message"].split(";")[0].split(" in ")[0]) for w in dataset.warnings}
    assert ("000005.jpg", "listed more than once") in messages
    assert any(
        f == "000009.jpg" and "reaches outside the 75x100 image" in m
        for f, m in ((w["file_name"], w["message"]) for w in dataset.warnings)
    )
    np.testing.assert_array_equal(dataset.records[2].gt_boxes, [[0, 0, 90, 120]])  # kept as annotated, as LOST


def test_coco_duplicate_image_entries_are_reported(tmp_path: Path):
    images, annotations, data = make_coco(tmp_path, [9, 25])
    data["images"].append(dict(data["images"][0]))
    annotations.write_text(json.dumps(data))
    dataset = load_dataset("coco", images=images, annotations=annotations)
    assert [r.image_id for r in dataset.records] == [9, 25]
    assert any("image id 9 appears more than once" in w["message"] for w in dataset.warnings)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("no_key", "no 'annotations' list"),
        ("empty", "'annotations' list is empty"),
        ("other_ids", "none of its 5 annotations has the image_id of one of its 5 images"),
        ("all_crowd", "all crowd regions"),
    ],
)
def test_annotations_that_give_no_image_a_box_are_refused(weights_file, coco, tmp_path, damage, needle):
    images, _, data = coco
    data = json.loads(json.dumps(data))
    if damage == "no_key":
        del data["annotations"]
    elif damage == "empty":
        data["annotations"] = []
    elif damage == "other_ids":
        for ann in data["annotations"]:
            ann["image_id"] += 1000
    else:
        for ann in data["annotations"]:
            ann["iscrowd"] = 1
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(data))
    out = tmp_path / "out"
    refused(
        coco_run(weights_file("dinov2_reg"), images, annotations, out), str(annotations), needle, "--dataset folder"
    )
    assert not (out / "journal").exists()
    data = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]
    refused(invoke("eval", "-p", str(tmp_path / "p.json"), *data), needle)


def test_a_split_file_with_a_byte_order_mark_is_read(tmp_path: Path):
    make_voc(tmp_path)
    split = tmp_path / "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes().replace(b"\n", b"\r\n"))
    assert [r.image_id for r in load_dataset("voc07", tmp_path).records] == [5, 7, 9, 12]


@pytest.mark.parametrize(("line", "needle"), [("000007 -1", "line 2"), ("hello", "line 2"), ("../x", "line 2")])
def test_a_split_line_that_is_no_image_id_names_the_file_and_line(tmp_path: Path, weights_file, line: str, needle):
    make_voc(tmp_path)
    split = tmp_path / "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt"
    split.write_text(f"000005\n{line}\n000009\n")
    args = ["run", "-b", "dinov2_reg", "--weights", weights_file("dinov2_reg"), "-d", "voc07", "--data-root", tmp_path]
    refused(invoke(*args, "--out", tmp_path / "o"), str(split), needle, "not a VOC image id")


@pytest.mark.parametrize(
    ("bbox", "needle"),
    [
        ("12 30 40 50", "bbox must be 4 finite numbers [x, y, w, h], got '12 30 40 50'"),
        ([1, 2, 3], "got [1, 2, 3]"),
        ([1, 2, float("nan"), 4], "got [1, 2, nan, 4]"),
        ([1, 2, True, 4], "got [1, 2, True, 4]"),
    ],
)
def test_malformed_coco_boxes_name_the_annotation_and_field(tmp_path: Path, weights_file, bbox, needle):
    images, annotations, data = make_coco(tmp_path, [3, 4])
    data["annotations"][1]["bbox"] = bbox
    annotations.write_text(json.dumps(data))
    args = ["-b", "dinov2_reg", "--weights", weights_file("dinov2_reg"), "-d", "coco", "--images", images]
    result = invoke("run", *args, "--annotations", annotations, "--out", tmp_path / "o")
    refused(result, str(annotations), f"annotation id {data['annotations'][1]['id']}", needle)


@pytest.mark.parametrize(
    ("kind", "extra", "needle"),
    [
        ("voc07", ["--images", "."], "--dataset voc07 does not take --images"),
        ("folder", ["--images", ".", "--annotations", "a.json"], "--dataset folder does not take --annotations"),
        ("coco20k", ["--split", "val"], "--dataset coco20k does not take --split"),
        ("folder", ["--images", ".", "--no-hard"], "does not take --no-hard"),
    ],
)
def test_arguments_a_dataset_does_not_take_are_refused(tmp_path: Path, kind: str, extra: list, needle: str):
    result = invoke("run", "-b", "dino", "-d", kind, "--data-root", tmp_path, *extra, "--out", tmp_path / "o")
    refused(result, needle)
