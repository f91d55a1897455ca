"""LOST's COCO20k: the selected-annotations file and the per-image download.

LOST's builder scans every annotation once per selected image (19,817 x ~605k). Here one pass
indexes annotations by image id, giving the same content: the listed images in list order,
their annotations in file order, and every category.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from objdisc.datasets.coco import read_coco20k_list
from objdisc.datasets.download.http import DownloadError, download
from objdisc.datasets.download.sources import coco_image_url
from objdisc.errors import DatasetError
from objdisc.utils.jsonio import gc_paused, write_text_atomic

logger = logging.getLogger(__name__)


def read_list(list_path: Path) -> list[int]:
    """Image ids of LOST's list, in order (lines ``train2014/COCO_train2014_%012d.jpg``)."""
    return [image_id for image_id, _ in read_coco20k_list(list_path)]


def select_coco20k(instances: dict[str, Any], image_ids: list[int]) -> dict[str, Any]:
    """LOST's ``instances_train2014_sel20k`` content from the full instances dict, in one pass.

    Args:
        instances: a COCO instances dict (``images``, ``annotations``, ``categories``).
        image_ids: the selected ids, in list order.

    Returns:
        ``{"images", "annotations", "categories"}``: for each listed id, its image entry and
        its annotations (file order), then all categories.
    """
    wanted = set(image_ids)
    images = {}
    for image in instances["images"]:
        if image["id"] in wanted:
            images.setdefault(image["id"], image)
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in instances["annotations"]:
        if ann["image_id"] in wanted:
            by_image[ann["image_id"]].append(ann)
    return {
        "images": [images[i] for i in image_ids if i in images],
        "annotations": [ann for i in image_ids for ann in by_image.get(i, [])],
        "categories": instances["categories"],
    }


_SPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, index: int) -> int:
    return _SPACE.match(text, index).end()  # type: ignore[union-attr]


def _expect(text: str, index: int, chars: str) -> str:
    if index >= len(text) or text[index] not in chars:
        raise ValueError(f"expected one of {chars!r} at character {index}")
    return text[index]


def scan_instances(text: str, wanted: set[int]) -> tuple[dict[str, Any], dict[int, list[str]]]:
    """Walk a COCO instances JSON text once, keeping the selected annotations as their own text.

    Every value is parsed by the standard library's decoder; the top-level ``annotations``
    array is decoded one element at a time so that the text of each annotation of a wanted
    image can be copied out verbatim (no float is re-formatted) and the others freed at once.

    Returns:
        ``(every other top-level value, wanted image id -> its annotations' JSON texts in
        file order)``.
    """
    decoder = json.JSONDecoder()
    top: dict[str, Any] = {}
    selected: dict[int, list[str]] = defaultdict(list)
    index = _skip(text, 0)
    _expect(text, index, "{")
    index = _skip(text, index + 1)
    if text[index : index + 1] == "}":
        return top, selected
    while True:
        key, index = decoder.raw_decode(text, index)
        index = _skip(text, index)
        _expect(text, index, ":")
        index = _skip(text, index + 1)
        if key == "annotations" and text[index : index + 1] == "[":
            index = _skip(text, index + 1)
            while text[index : index + 1] != "]":
                ann, end = decoder.raw_decode(text, index)
                if ann["image_id"] in wanted:
                    selected[ann["image_id"]].append(text[index:end])
                index = _skip(text, end)
                if _expect(text, index, ",]") == ",":
                    index = _skip(text, index + 1)
            index += 1
        else:
            top[key], index = decoder.raw_decode(text, index)
        index = _skip(text, index)
        if _expect(text, index, ",}") == "}":
            return top, selected
        index = _skip(text, index + 1)


def build_coco20k(instances_path: Path, list_path: Path, out_path: Path) -> dict[str, int]:
    """Write ``instances_train2014_sel20k.json`` (atomically) and return its counts.

    The content equals :func:`select_coco20k` of the parsed file; the selected annotations
    are copied as text (see :func:`scan_instances`), the fast path for the 332 MB train2014
    file.
    """
    image_ids = read_list(list_path)
    wanted = set(image_ids)
    try:
        text = instances_path.read_text()
        with gc_paused():
            top, selected = scan_instances(text, wanted)
        del text
        images = {}
        for image in top["images"]:
            if image["id"] in wanted:
                images.setdefault(image["id"], image)
        categories = top["categories"]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{instances_path}: cannot read COCO instances ({exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{instances_path}: not a valid COCO instances file ({type(exc).__name__}: {exc})") from exc
    annotations = [raw for i in image_ids for raw in selected.get(i, [])]
    out = (
        f'{{"images": {json.dumps([images[i] for i in image_ids if i in images])}, '
        f'"annotations": [{", ".join(annotations)}], "categories": {json.dumps(categories)}}}'
    )
    write_text_atomic(out_path, out)
    return {"images": sum(i in images for i in image_ids), "annotations": len(annotations)}


def jpeg_check(width: int, height: int) -> Callable[[Path], str | None]:
    """A download check: the file decodes as an image of the annotated size."""

    def check(path: Path) -> str | None:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            return "not a decodable image"
        if image.shape[:2] != (height, width):
            return f"image is {image.shape[1]}x{image.shape[0]}, annotated {width}x{height}"
        return None

    return check


def fetch_images(
    images: list[dict[str, Any]],
    folder: Path,
    *,
    mirror: str | None = None,
    workers: int = 16,
    retries: int = 3,
    progress: bool | None = None,
) -> dict[str, int]:
    """Download the listed COCO images one by one, in parallel; existing files are kept.

    Each image is verified as a decodable image of its annotated size before it is moved into
    place. Failures do not stop the others; they are raised together at the end (a rerun
    fetches only what is still missing).

    Returns:
        ``{"fetched": n, "present": n}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    todo = [im for im in images if not (folder / im["file_name"]).is_file()]
    present = len(images) - len(todo)
    failures: list[str] = []

    def one(image: dict[str, Any]) -> None:
        url = coco_image_url(image.get("coco_url", ""), image["file_name"], mirror)
        download(
            url,
            folder / image["file_name"],
            retries=retries,
            progress=False,
            check=jpeg_check(int(image["width"]), int(image["height"])),
        )

    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(
            total=len(images),
            initial=present,
            unit="img",
            desc="COCO20k images",
            disable=None if progress is None else not progress,
        ) as bar,
    ):
        futures = {pool.submit(one, image): image for image in todo}
        for future in as_completed(futures):
            try:
                future.result()
            except DownloadError as exc:
                failures.append(str(exc))
            bar.update(1)
    if failures:
        raise DownloadError(
            f"{len(failures)} of {len(todo)} COCO20k images failed (rerun to retry them): " + "; ".join(failures[:3])
        )
    return {"fetched": len(todo), "present": present}
