"""Shared fixtures: random-init weights files and synthetic datasets in their real formats.

Nothing here downloads: models are built with ``pretrained=False`` and saved to a temp dir,
datasets are written by the tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from planted_model import flat_images, planted  # noqa: F401  (fixtures of the register tests)
from safetensors.torch import save_file

from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec

# Image sizes (H, W) that are not patch multiples, two sharing a padded size for p=14 and p=16.
SIZES = [(75, 100), (70, 98), (100, 75), (61, 83)]


def write_image(path: Path, hw: tuple[int, int], box: tuple[int, int, int, int], seed: int = 0) -> None:
    """A noisy dark JPEG/PNG with a bright textured object inside ``box`` (x1, y1, x2, y2)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(*hw, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = rng.integers(150, 255, size=(y2 - y1, x2 - x1, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def refused(result, *needles: str) -> str:
    """A CLI result that failed with one clear ``Error:`` line holding every needle, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ") and len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, message
    return message


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder``: relative path -> content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``weights_file(name)``: a random-init timm-layout .safetensors for a backbone, made once."""
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            torch.manual_seed(0)
            model = build_model(get_spec(name))
            path = tmp_path_factory.mktemp("weights") / f"{get_spec(name).name}.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
            made[name] = path
        return made[name]

    return make


def voc_xml(stem: str, hw: tuple[int, int], objects: list[dict]) -> str:
    """A VOC annotation; each object: name, box (1-based inclusive xyxy), difficult, truncated."""
    parts = [f"<annotation><filename>{stem}.jpg</filename>"]
    parts.append(f"<size><width>{hw[1]}</width><height>{hw[0]}</height><depth>3</depth></size>")
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        parts.append(
            f"<object><name>{obj.get('name', 'cat')}</name><pose>Unspecified</pose>"
            f"<truncated>{obj.get('truncated', 0)}</truncated><difficult>{obj.get('difficult', 0)}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def make_voc(root: Path, year: str = "2007", stems: list[str] | None = None) -> dict[str, list[dict]]:
    """A VOCdevkit/VOC<year> tree under ``root``; returns the objects written per stem."""
    stems = stems or (
        ["000005", "000007", "000009", "000012"]
        if year == "2007"
        else ["2008_000002", "2008_000003", "2009_000001", "2010_000005"]
    )
    base = root / "VOCdevkit" / f"VOC{year}"
    (base / "Annotations").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    written = {}
    for i, (stem, hw) in enumerate(zip(stems, SIZES, strict=True)):
        h, w = hw
        box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        write_image(base / "JPEGImages" / f"{stem}.jpg", hw, box, seed=i)
        objects = [{"box": (box[0] + 1, box[1] + 1, box[2], box[3])}]
        if i == 1:
            objects.append({"box": (1, 1, 10, 10), "difficult": 1})
        if i == 2:
            objects = [{"box": (1, 1, 20, 20), "truncated": 1}]
        (base / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, hw, objects))
        written[stem] = objects
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(stems) + "\n")
    return written


def coco_instances(entries: list[tuple[int, str, tuple[int, int]]], boxes: dict[int, list]) -> dict:
    """A COCO instances dict; ``boxes[id]`` holds ``(xywh, iscrowd)`` pairs."""
    images = [{"id": i, "file_name": name, "height": hw[0], "width": hw[1]} for i, name, hw in entries]
    annotations = []
    for image_id, items in boxes.items():
        for xywh, crowd in items:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 18,
                    "bbox": list(xywh),
                    "area": xywh[2] * xywh[3],
                    "iscrowd": crowd,
                }
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": 18, "name": "dog"}]}


def make_coco(folder: Path, ids: list[int], name_fmt: str = "{:012d}.jpg") -> tuple[Path, Path, dict]:
    """Images + instances json (one crowd box on the first image). Returns (images, json, data)."""
    images = folder / "images"
    entries, boxes = [], {}
    for i, (image_id, hw) in enumerate(zip(ids, SIZES, strict=False)):
        h, w = hw
        name = name_fmt.format(image_id)
        box = (w // 5, h // 5, 4 * w // 5, 4 * h // 5)
        write_image(images / name, hw, box, seed=10 + i)
        entries.append((image_id, name, hw))
        boxes[image_id] = [((box[0] + 0.4, box[1] + 0.6, box[2] - box[0] + 0.5, box[3] - box[1]), 0)]
        if i == 0:
            boxes[image_id].append(((0, 0, w, h), 1))
    data = coco_instances(entries, boxes)
    annotations = folder / "instances.json"
    annotations.write_text(json.dumps(data))
    return images, annotations, data


def make_saliency(
    images: Path, masks: Path, n: int = 3, sizes: tuple[tuple[int, int], ...] = ((70, 84), (64, 96), (90, 60))
) -> list[np.ndarray]:
    """``n`` JPEGs with a bright object and the PNG of each one's object (0 / 255) under the same
    stem; returns the ground-truth masks."""
    from PIL import Image

    masks.mkdir(parents=True, exist_ok=True)
    truths = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        box = (w // 5, h // 4, w // 5 + w // 2, h // 4 + h // 2)
        write_image(images / f"im{i:02d}.jpg", (h, w), box, seed=40 + i)
        truth = np.zeros((h, w), dtype=bool)
        truth[box[1] : box[3], box[0] : box[2]] = True
        Image.fromarray(truth.astype(np.uint8) * 255).save(masks / f"im{i:02d}.png")
        truths.append(truth)
    return truths


def make_coco20k(root: Path, ids: list[int], listed: list[int], selected: bool = False) -> dict:
    coco = root / "COCO"
    _, annotations, data = make_coco(coco / "images", ids, "COCO_train2014_{:012d}.jpg")
    (coco / "images" / "images").rename(coco / "images" / "train2014")
    (coco / "annotations").mkdir()
    name = "instances_train2014_sel20k.json" if selected else "instances_train2014.json"
    annotations.rename(coco / "annotations" / name)
    (coco / "coco_20k_filenames.txt").write_text("".join(f"train2014/COCO_train2014_{i:012d}.jpg\n" for i in listed))
    return data


def voc_tar(tmp_path: Path, year: str = "2007") -> bytes:
    source = tmp_path / f"voc-source-{year}"
    make_voc(source, year)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(source / "VOCdevkit", arcname="VOCdevkit")
    return buffer.getvalue()


def pin(monkeypatch: pytest.MonkeyPatch, table: str, key: str | None, body: bytes) -> None:
    """Make the known md5/size of a source those of the small test archive."""
    import objdisc.datasets.download.sources as sources

    entry = getattr(sources, table) if key is None else getattr(sources, table)[key]
    value = (entry[0], hashlib.md5(body).hexdigest(), len(body))
    if key is None:
        monkeypatch.setattr(sources, table, value)
    else:
        monkeypatch.setitem(getattr(sources, table), key, value)


def corloc(metrics: dict) -> dict:
    """The CorLoc block of a run's (or eval's) metrics: ``values.corloc``, ``n_hits``, ``n_scored``, ..."""
    return metrics["metrics"]["corloc"]


def corloc_value(metrics: dict) -> float | None:
    """CorLoc in percent, from a metrics.json content."""
    return corloc(metrics)["values"]["corloc"]


def invoke(*args: str):
    """The real CLI, in process (stdout and stderr apart)."""
    from click.testing import CliRunner

    from objdisc.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def coco_run(weights: Path, images: Path, annotations: Path, out: Path, *extra: str):
    """``objdisc run`` of dinov2_reg on a COCO-format set, no decode workers."""
    data = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]
    model = ["-b", "dinov2_reg", "--weights", str(weights)]
    return invoke("run", *model, *data, "--out", str(out), "--workers", "0", *extra)


def tokencut_saliency_run(weights: Path, root: Path, n: int) -> list[np.ndarray]:
    """``n`` saliency images under ``root/img`` (ground truth in ``root/gt``) and a TokenCut run
    with the bilateral solver on them in ``root/o``; returns the ground-truth masks."""
    truths = make_saliency(root / "img", root / "gt", n=n)
    result = invoke("run", "-b", "dino", "--weights", weights, "-d", "saliency", "--images", root / "img",
                    "--annotations", root / "gt", "--method", "tokencut", "--refine", "bilateral",
                    "--workers", "0", "--out", root / "o")  # fmt: skip
    assert result.exit_code == 0, result.output
    return truths


@pytest.fixture(scope="session")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """Four annotated images, plus a fifth listed in the json with no annotation at all."""
    folder = tmp_path_factory.mktemp("coco")
    images, annotations, data = make_coco(folder, [11, 12, 13, 14])
    write_image(images / "000000000015.jpg", (64, 80), (10, 10, 40, 40), seed=99)
    data["images"].append({"id": 15, "file_name": "000000000015.jpg", "height": 64, "width": 80})
    annotations.write_text(json.dumps(data))
    return images, annotations, data


@pytest.fixture(scope="session")
def finished(tmp_path_factory: pytest.TempPathFactory, weights_file, coco) -> dict[str, Path]:
    """A full run and a --limit 2 run of the ``coco`` fixture (never modify them: copy first)."""
    images, annotations, _ = coco
    root = tmp_path_factory.mktemp("runs")
    runs = {"full": root / "full", "limit2": root / "limit2"}
    assert coco_run(weights_file("dinov2_reg"), images, annotations, runs["full"]).exit_code == 0
    assert coco_run(weights_file("dinov2_reg"), images, annotations, runs["limit2"], "--limit", "2").exit_code == 0
    return runs


def fake_run(
    folder: Path,
    backbone: str,
    dataset: str,
    corloc: float,
    speed: float = 10.0,
    ttr: dict | None = None,
    legacy: bool = False,
    **options,
) -> Path:
    """A finished run folder as ``objdisc run`` writes it (only the fields tables read); with
    ``legacy``, as objdisc 0.1 wrote it (CorLoc at the top level of metrics.json)."""
    folder.mkdir(parents=True)
    discovery = {"features": "k", "layer": -1, "method": "lost", "k_patches": 100, "gram_bias": 0.0, **options}
    producer = {"backbone": backbone, "discovery": discovery, **({"test_time_registers": ttr} if ttr else {})}
    scored, hits = 1000, round(corloc * 10)
    metrics = {"producer": producer, "dataset": f"{dataset}/trainval", "images_per_s": speed}
    if legacy:
        metrics.update(corloc=corloc, n_scored=scored, n_hits=hits)
    else:
        block = {
            "values": {"corloc": corloc},
            "labels": {"corloc": "CorLoc"},
            "higher_is_better": {"corloc": True},
            "headline": ["corloc"],
            "n_scored": scored,
            "n_hits": hits,
        }
        metrics["metrics"] = {"corloc": block}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(json.dumps({"producer": producer, "status": "finished", "options": discovery}))
    return folder


@pytest.fixture(scope="session")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two small noisy photos with a bright object."""
    folder = tmp_path_factory.mktemp("two-images")
    for i in range(2):
        write_image(folder / f"{i}.jpg", (56, 70), (10, 10, 40, 40), seed=i)
    return folder


def folder_run(weights: Path, images: Path, out: Path, *extra: str):
    """``objdisc run`` of dinov2_reg on a folder of images, no decode workers."""
    args = ["run", "-b", "dinov2_reg", "--weights", str(weights), "-d", "folder", "--images", str(images)]
    return invoke(*args, "--out", str(out), "--workers", "0", *extra)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same global random state: no test depends on luck."""
    import random

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
