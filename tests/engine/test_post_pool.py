"""The post-processing pool: the serial path's entries, a worker's death costs its image only."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import folder_run, write_image

from objdisc.datasets.base import ImageRecord
from objdisc.engine.discover import ImageResult
from objdisc.engine.post import PostSpec, post_process
from objdisc.engine.post_pool import PostPool, SerialPost, default_post_workers
from objdisc.errors import OptionError
from objdisc.methods import Lost
from objdisc.objects import Geometry, Objects


@dataclass(frozen=True)
class Fussy(Lost):
    """LOST whose pixel step kills its process on the image whose seed is 3 and refuses an option on 99."""

    needs_image: ClassVar[bool] = True

    def finalize(self, objects: Objects, load: Callable[[], np.ndarray], image_hw: tuple[int, int]) -> Objects:
        load()  # reads the image, as MaskCut does
        if objects.seeds[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        if objects.seeds[0] == 99:
            raise OptionError("--crf: pydensecrf went missing")
        return super().finalize(objects, load, image_hw)


def raw(path: Path, image_id: int) -> ImageResult:
    """An image's objects as the engine leaves them for the post-processing (the seed is the image id)."""
    objects = Objects(
        np.array([[0, 0, 16, 16]]), np.array([1.0]), np.array([image_id]), np.ones((1, 2, 2), bool),
        geometry=Geometry(16, (2, 2), (32, 32), (32, 32)),
    )  # fmt: skip
    return ImageResult(ImageRecord(image_id, path, path.name), (32, 32), objects, finalized=False)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    names = ["a.jpg", "b.jpg", "die.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]
    for i, name in enumerate(names):
        write_image(tmp_path / name, (32, 32), (4, 4, 20, 20), seed=i)
    return [tmp_path / n for n in names]


def test_a_worker_that_dies_costs_its_image_only(images: list[Path]):
    spec = PostSpec(Fussy())
    results = [raw(p, i + 1) for i, p in enumerate(images)]
    serial = {r.record.image_id: post_process(PostSpec(Lost()), r) for r in results}
    done = {}
    with PostPool(spec, workers=2) as pool:
        for result in results:
            done.update((r.record.image_id, e) for r, e in pool.submit(result))
        done.update((r.record.image_id, e) for r, e in pool.drain())
    assert sorted(done) == list(range(1, 8))  # every image has its entry
    died = done.pop(3)
    assert died["objects"] is None and "worker died on this image" in died["error"] and "die.jpg" in died["error"]
    for image_id, entry in done.items():  # the others, as the main process makes them
        assert entry == serial[image_id], image_id


def test_an_option_error_in_a_worker_stops_the_run(images: list[Path]):
    with PostPool(PostSpec(Fussy()), workers=1) as pool, pytest.raises(OptionError, match="pydensecrf went missing"):
        list(pool.submit(raw(images[0], 99)))
        list(pool.drain())


def test_the_serial_path_is_post_process():
    post = SerialPost(PostSpec(Lost()))
    assert list(post.ready()) == [] and list(post.drain()) == []


def test_default_workers_leave_the_main_process_and_the_decoders_a_core(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_post_workers(8) == 32 and default_post_workers(60) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_post_workers(2) == 0 and default_post_workers(0) == 1


def test_maskcut_with_the_crf_in_two_workers_equals_the_main_process(tmp_path: Path, weights_file):
    images = tmp_path / "images"
    for i in range(4):
        write_image(images / f"{i}.jpg", (70, 90), (10, 12, 60, 50), seed=i)
    args = ("--method", "maskcut", "--fixed-size", "96", "--batch-size", "2")
    weights = weights_file("dinov2_reg")
    serial = folder_run(weights, images, tmp_path / "serial", *args, "--post-workers", "0")
    pooled = folder_run(weights, images, tmp_path / "pooled", *args, "--post-workers", "2")
    assert serial.exit_code == 0 and pooled.exit_code == 0, pooled.output
    for name in ("predictions.json", "per_image.json", "gt.json"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "pooled" / name).read_bytes(), name
    run = json.loads((tmp_path / "pooled" / "run.json").read_text())
    assert run["options"]["post_workers"] == 2
    predictions = json.loads((tmp_path / "pooled" / "predictions.json").read_text())
    assert predictions and all("segmentation" in p for p in predictions)


def _cannot_start() -> None:
    raise RuntimeError("this worker cannot start")


@dataclass(frozen=True)
class Unstartable(Lost):
    """LOST that a worker process cannot unpickle (as a method of an unguarded script's __main__)."""

    def __reduce__(self):
        return (_cannot_start, ())


def test_workers_that_cannot_start_hand_the_work_to_the_main_process(images: list[Path], caplog):
    import logging

    results = [raw(p, i + 1) for i, p in enumerate(images[:3])]
    with caplog.at_level(logging.WARNING), PostPool(PostSpec(Unstartable()), workers=1) as pool:
        done = [d for r in results for d in pool.submit(r)] + list(pool.drain())
    assert pool.serial and 'if __name__ == "__main__":' in caplog.text
    serial = [post_process(PostSpec(Lost()), r) for r in results]
    assert sorted((e["image_id"], e["objects"]) for _, e in done) == [(e["image_id"], e["objects"]) for e in serial]
