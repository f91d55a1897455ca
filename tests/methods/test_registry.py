"""A method is one class plus one registry entry: a throwaway method registered in METHODS alone
goes through run, sweep, table and visualize with no other file changed, K objects per image."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import corloc, make_voc
from pycocotools.coco import COCO

from objdisc.commands.run import RunConfig, run
from objdisc.commands.sweep import grid, sweep
from objdisc.commands.visualize import VisualizeConfig
from objdisc.commands.visualize import run as visualize
from objdisc.methods import METHODS, Method
from objdisc.methods.options import at_least, option
from objdisc.objects import ObjectsBatch
from objdisc.reports.table import table


@dataclass(frozen=True)
class Frames(Method):
    """Two objects per image: the grid less a margin (score 0.9) and its top-left patch (score 0.2)."""

    margin: int = option(1, "Frames: patches left out on every side.", checks=[at_least(0)], short="m")

    name: ClassVar[str] = "frames"
    feature_kinds: ClassVar[tuple[str, ...]] = ("v", "k")
    map_label: ClassVar[str] = "feature norm"

    def __call__(self, feats, grid_hw, patch_size, image_hws) -> ObjectsBatch:
        b, (h, w) = feats.shape[0], grid_hw
        masks = torch.zeros(b, 2, h, w, dtype=torch.bool)
        m = min(self.margin, (min(h, w) - 1) // 2)
        masks[:, 0, m : h - m, m : w - m] = True
        masks[:, 1, 0, 0] = True
        boxes = torch.zeros(b, 2, 4, dtype=torch.long)
        boxes[:, 0] = torch.tensor([m * patch_size, m * patch_size, (w - m) * patch_size, (h - m) * patch_size])
        boxes[:, 1] = torch.tensor([0, 0, patch_size, patch_size])
        boxes[..., 2] = torch.minimum(boxes[..., 2], image_hws[:, None, 1])
        boxes[..., 3] = torch.minimum(boxes[..., 3], image_hws[:, None, 0])
        return ObjectsBatch(
            boxes=boxes,
            scores=torch.tensor([[0.9, 0.2]]).expand(b, 2),
            valid=torch.ones(b, 2, dtype=torch.bool),
            seeds=torch.tensor([[(h // 2) * w + w // 2, 0]]).expand(b, 2),
            masks=masks,
            score_map=feats.float().norm(dim=-1).reshape(b, h, w),
        )


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(METHODS, "frames", Frames)
    return Frames


def test_a_method_registered_alone_goes_through_run_sweep_table_and_visualize(
    registered, tmp_path: Path, weights_file
):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    base = RunConfig.flat("dinov2_reg", "voc07", tmp_path / "o", data_root=tmp_path, weights=weights, workers=0)
    config = dataclasses.replace(base, method="frames", method_options={"margin": 2})
    result = run(config)
    predictions = json.loads((tmp_path / "o/predictions.json").read_text())
    assert len(predictions) == 2 * 4 and [p["score"] for p in predictions[:2]] == [0.9, 0.2]
    gt = COCO(str(tmp_path / "o/gt.json"))
    loaded = gt.loadRes(str(tmp_path / "o/predictions.json"))  # boxes, scores and RLE masks load
    first = loaded.loadAnns(loaded.getAnnIds(imgIds=[5]))[0]
    assert loaded.annToMask(first).sum() == first["bbox"][2] * first["bbox"][3]  # the mask fills its box
    discovery = json.loads((tmp_path / "o/run.json").read_text())["producer"]["discovery"]
    assert discovery == {"features": "v", "layer": -1, "method": "frames", "margin": 2}
    per_image = json.loads((tmp_path / "o/per_image.json").read_text())["images"]
    assert [o["score"] for o in per_image[0]["objects"]] == [0.9, 0.2]
    assert result.metrics["n_objects"] == 8 and corloc(result.metrics)["n_scored"] == 4

    points = grid(["frames", "lost"], None, [-1], {"margin": [0, 2]})
    assert [p.slug for p in points] == ["frames_v_l-1_m0", "frames_v_l-1_m2", "lost_k_l-1"]
    rows = sweep(dataclasses.replace(base, cache=tmp_path / "cache"), points, tmp_path / "s")
    assert [r["run"] for r in rows] == [p.slug for p in points] and "corloc" in rows[0]
    summary = (tmp_path / "s" / "summary.md").read_text()
    assert "(method=frames, margin=0)" in summary and "(method=frames, margin=2)" in summary

    text, _ = table([tmp_path / "s" / p.slug for p in points])
    assert "(method=frames, margin=0)" in text

    page = visualize(VisualizeConfig([tmp_path / "o"], limit=2))
    pictures = sorted((tmp_path / "o" / "vis" / "o").glob("*.png"))
    assert page.exists() and len(pictures) == 2
    assert "differ" not in page.read_text()  # the recomputed objects are the run's


def test_a_registered_method_owns_its_flags_in_make_method(registered):
    from objdisc.errors import OptionError
    from objdisc.methods import make_method, owners

    assert make_method("frames", margin=3).margin == 3 and owners("margin") == ["frames"]
    with pytest.raises(OptionError, match="--margin is an option of frames; lost does not take it"):
        make_method("lost", margin=3)
    with pytest.raises(OptionError, match="--margin must be at least 0"):
        make_method("frames", margin=-1)
