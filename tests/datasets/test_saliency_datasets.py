"""The saliency datasets: the layouts their archives unpack to and TokenCut's, the generic kind,
and one clear error for a missing mask or a folder not laid out as expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke, make_saliency, refused

from objdisc.datasets import load_dataset
from objdisc.datasets.saliency import SALIENCY_SETS
from objdisc.errors import DatasetError


@pytest.mark.parametrize(
    ("kind", "images", "masks"),
    [
        ("ecssd", "ECSSD/images", "ECSSD/ground_truth_mask"),
        ("duts-te", "DUTS-TE/DUTS-TE-Image", "DUTS-TE/DUTS-TE-Mask"),
        ("duts-te", "DUTS-TE/DUTS-TE/DUTS-TE-Image", "DUTS-TE/DUTS-TE/DUTS-TE-Mask"),  # one level more
        ("dut-omron", "DUT-OMRON/DUT-OMRON-image", "DUT-OMRON/pixelwiseGT-new-PNG"),
        ("dut-omron", "DUT_OMRON/img", "DUT_OMRON/gt"),  # as TokenCut's download_data.sh leaves it
    ],
)
def test_each_set_loads_from_its_layout(tmp_path: Path, kind: str, images: str, masks: str):
    make_saliency(tmp_path / images, tmp_path / masks, n=3)
    (tmp_path / masks / "extra.png").write_bytes((tmp_path / masks / "im00.png").read_bytes())  # masks may be extra
    dataset = load_dataset(kind, tmp_path)
    assert dataset.has_saliency and not dataset.has_gt
    assert [r.file_name for r in dataset.records] == ["im00.jpg", "im01.jpg", "im02.jpg"]
    assert [r.image_id for r in dataset.records] == [1, 2, 3]
    assert all(r.mask_path == tmp_path / masks / f"im{i:02d}.png" for i, r in enumerate(dataset.records))
    expected = SALIENCY_SETS[kind].n_images
    assert dataset.warnings == [
        {"file_name": str(tmp_path / images), "message": f"3 images, not the {expected} of {kind}"}
    ]


def test_the_generic_kind_takes_any_pair_of_folders(tmp_path: Path):
    make_saliency(tmp_path / "a", tmp_path / "b", n=2)
    dataset = load_dataset("saliency", images=tmp_path / "a", annotations=tmp_path / "b")
    assert dataset.name == "saliency/a" and len(dataset.records) == 2 and dataset.has_saliency
    with pytest.raises(DatasetError, match="--split"):
        load_dataset("saliency", images=tmp_path / "a", annotations=tmp_path / "b", split="val")


def test_an_image_without_its_mask_is_named(tmp_path: Path):
    make_saliency(tmp_path / "ECSSD/images", tmp_path / "ECSSD/ground_truth_mask", n=3)
    (tmp_path / "ECSSD/ground_truth_mask/im01.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 images .* have no mask \(.*ground_truth_mask/im01\.png\)"):
        load_dataset("ecssd", tmp_path)


def test_a_folder_not_laid_out_as_expected_is_named_with_the_fix(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"ECSSD: not found; expected the ecssd dataset there .*data download ecssd"):
        load_dataset("ecssd", tmp_path)
    make_saliency(tmp_path / "ECSSD/pictures", tmp_path / "ECSSD/ground_truth_mask", n=1)
    with pytest.raises(DatasetError, match=r"ECSSD: no image folder \(images or img\).*ECSSD/images and"):
        load_dataset("ecssd", tmp_path)
    result = invoke("run", "-b", "dino", "-d", "ecssd", "--data-root", tmp_path, "--out", tmp_path / "o")
    refused(result, "no image folder (images or img)", "objdisc data download ecssd")
