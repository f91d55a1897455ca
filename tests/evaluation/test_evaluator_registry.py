"""A metric is one evaluator class plus one registry entry: a throwaway metric registered in
EVALUATORS alone is computed by run and eval, shown by table and sweep, with no other file changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import make_voc

from objdisc.commands.eval import EvalConfig
from objdisc.commands.eval import run as evaluate
from objdisc.commands.run import RunConfig, run, summary
from objdisc.commands.sweep import grid, sweep
from objdisc.datasets import DatasetArgs
from objdisc.evaluation import EVALUATORS, Evaluator
from objdisc.reports.table import table


class ObjectsPerImage(Evaluator):
    """Mean number of objects per image with ground truth (a miss counts 0)."""

    name: ClassVar[str] = "objects_per_image"
    requirement: ClassVar[str] = "ground-truth boxes"

    def applies(self, dataset: Any) -> bool:
        return dataset.has_gt

    def reset(self) -> None:
        self.counts: list[int] = []

    def process(self, record: Any, objects: Any) -> dict[str, Any] | None:
        self.counts.append(0 if objects is None else len(objects))
        return {"n": self.counts[-1]}

    def evaluate(self) -> dict[str, Any]:
        mean = sum(self.counts) / len(self.counts) if self.counts else None
        return {
            "values": {"objects_per_image": mean},
            "labels": {"objects_per_image": "objects/img"},
            "higher_is_better": {"objects_per_image": True},
            "headline": ["objects_per_image"],
            "n_images": len(self.counts),
        }


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(EVALUATORS, ObjectsPerImage.name, ObjectsPerImage)


def test_a_metric_registered_alone_goes_through_run_eval_table_and_sweep(registered, tmp_path: Path, weights_file):
    make_voc(tmp_path)
    base = RunConfig.flat("dinov2_reg", "voc07", tmp_path / "o", data_root=tmp_path, weights=weights_file("dinov2_reg"),
                          workers=0, method="maskcut", method_options={"crf": False, "masks": 2})  # fmt: skip
    result = run(base)
    block = result.metrics["metrics"]["objects_per_image"]
    per_image = json.loads((tmp_path / "o" / "per_image.json").read_text())["images"]
    counts = [len(item.get("objects", [])) for item in per_image]
    assert block["n_images"] == 4 and block["values"]["objects_per_image"] == sum(counts) / 4
    assert [item["objects_per_image"]["n"] for item in per_image] == counts
    assert "objects_per_image objects/img" in summary(result)  # the default summary line

    scored, _ = evaluate(EvalConfig(tmp_path / "o" / "predictions.json", DatasetArgs("voc07", tmp_path)))
    assert scored["metrics"]["objects_per_image"]["values"] == block["values"]

    text, _ = table([tmp_path / "o"], metrics=["corloc", "objects_per_image"])
    assert "VOC07 objects/img" in text and f"| {block['values']['objects_per_image']:.1f} |" in text

    rows = sweep(
        RunConfig.flat("dinov2_reg", "voc07", tmp_path / "s", data_root=tmp_path, weights=weights_file("dinov2_reg"),
                       workers=0, cache=tmp_path / "cache"),
        grid(["lost"], None, [-1]), tmp_path / "s",
    )  # fmt: skip
    assert rows[0]["objects_per_image"] == 1.0  # LOST: one object per image
