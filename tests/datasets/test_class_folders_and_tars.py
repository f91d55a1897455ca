"""ImageNet-style class-folder trees and WebDataset-style tar shards."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image

from objdisc.datasets import DatasetArgs, load_dataset
from objdisc.datasets.class_folders import CLASS_STRIDE
from objdisc.errors import DatasetError, ImageError
from objdisc.images import load_image


def tree(root: Path, classes: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            write_image(root / name / f"{name}_{i}.JPEG", (40, 50), (5, 5, 30, 30), seed=10 * c + i)
    return root


def test_records_keep_their_class_and_ids_do_not_depend_on_the_classes_taken(tmp_path: Path):
    root = tree(tmp_path / "train", {"n01": 2, "n02": 3, "n03": 1})
    (root / "n02" / "notes.txt").write_text("not an image")
    whole = load_dataset("class-folders", images=root)
    assert [r.file_name for r in whole.records] == [
        "n01/n01_0.JPEG", "n01/n01_1.JPEG", "n02/n02_0.JPEG", "n02/n02_1.JPEG", "n02/n02_2.JPEG", "n03/n03_0.JPEG",
    ]  # fmt: skip
    assert [r.image_id for r in whole.records] == [1, 2, CLASS_STRIDE + 1, CLASS_STRIDE + 2, CLASS_STRIDE + 3,
                                                   2 * CLASS_STRIDE + 1]  # fmt: skip
    assert {r.group for r in whole.records} == {"n01", "n02", "n03"} and whole.name == "class-folders/train"
    by_name = {r.file_name: r.image_id for r in whole.records}
    for taken in ("n03,n01", "1:3", f"@{tmp_path / 'list.txt'}"):
        (tmp_path / "list.txt").write_text("n02\nn03\n")
        part = load_dataset("class-folders", images=root, classes=taken)
        assert all(by_name[r.file_name] == r.image_id for r in part.records)  # the whole tree's ids
        assert part.name == whole.name
    assert {r.group for r in load_dataset("class-folders", images=root, classes="1:3").records} == {"n02", "n03"}


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("n09", "n09 not a class folder of the tree (nearest: n03, n02, n01)"),
        ("5:9", "selects no class folder of the 3 there"),
        ("a:b", "a slice of class folders is START:STOP"),
        ("@/nowhere/list.txt", "cannot read /nowhere/list.txt"),
    ],
)
def test_a_selection_the_tree_does_not_hold_is_refused(tmp_path: Path, classes: str, message: str):
    root = tree(tmp_path / "train", {"n01": 1, "n02": 1, "n03": 1})
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_dataset("class-folders", images=root, classes=classes)


def test_classes_is_refused_where_the_kind_has_no_classes(tmp_path: Path):
    write_image(tmp_path / "a.jpg", (40, 50), (5, 5, 30, 30))
    with pytest.raises(DatasetError, match="does not take --classes"):
        DatasetArgs("folder", images=tmp_path, classes="n01").load()
    with pytest.raises(DatasetError, match="no class folders in it"):
        load_dataset("class-folders", images=tmp_path)


def shard(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def jpeg(tmp_path: Path, seed: int) -> bytes:
    write_image(tmp_path / "tmp.jpg", (40, 50), (5, 5, 30, 30), seed=seed)
    return (tmp_path / "tmp.jpg").read_bytes()


def test_tar_shards_are_read_in_place_member_by_member(tmp_path: Path):
    a, b = jpeg(tmp_path, 1), jpeg(tmp_path, 2)
    shard(tmp_path / "s/shard-000.tar", {"k0.jpg": a, "k0.json": b'{"label": 3}', "k1.jpg": b})
    shard(tmp_path / "s/shard-001.tar", {"k2.gif": b"GIF89a" + bytes(20), "k3.jpg": a})
    data = load_dataset("tars", images=tmp_path / "s")
    names = [r.file_name for r in data.records]
    assert names == ["shard-000.tar/k0.jpg", "shard-000.tar/k1.jpg", "shard-001.tar/k2.gif", "shard-001.tar/k3.jpg"]
    assert [r.image_id for r in data.records] == [1, 2, 1_000_001, 1_000_002]
    first = data.records[0]
    pixels, hw = load_image(first.path, member=first.member)
    assert hw == (40, 50) and np.array_equal(pixels, load_image(_write(tmp_path / "a.jpg", a))[0])
    assert "a GIF file" in data.records[2].error and "shard-001.tar (member k2.gif)" in data.records[2].error
    only = load_dataset("tars", images=tmp_path / "s", classes="shard-001.tar")
    assert [r.image_id for r in only.records] == [1_000_001, 1_000_002]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_damaged_shard_keeps_what_comes_before_the_damage(tmp_path: Path):
    a = jpeg(tmp_path, 1)
    path = shard(tmp_path / "s/shard-000.tar", {"k0.jpg": a, "k1.jpg": a, "k2.jpg": a})
    whole = path.read_bytes()
    path.write_bytes(whole[: 512 + len(a) + 700])  # cut inside the second member
    data = load_dataset("tars", images=tmp_path / "s")
    (warning,) = data.warnings
    assert warning["file_name"] == "shard-000.tar" and "the rest of it is left out" in warning["message"]
    good = data.records[0]
    assert load_image(good.path, member=good.member)[1] == (40, 50)
    for record in data.records[1:]:  # members cut short are named when read, never a crash
        with pytest.raises(ImageError, match=re.escape("shard-000.tar (member")):
            load_image(record.path, member=record.member)
