"""Misuse that used to give a silently wrong number, through the real CLI: images without ground
truth, annotations that match no image, eval on another image set than the run's, eval writing
over a run, tables over odd folders, and the progress bars that report the score."""

from __future__ import annotations

import functools
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import tqdm
from click.testing import CliRunner
from conftest import coco_instances, make_coco, refused, snapshot, write_image

from objdisc.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def coco_run(weights: Path, images: Path, annotations: Path, out: Path, *extra: str):
    data = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]
    model = ["-b", "dinov2_reg", "--weights", str(weights)]
    return invoke("run", *model, *data, "--out", str(out), "--workers", "0", *extra)


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """Four annotated images, plus a fifth listed in the json with no annotation at all."""
    folder = tmp_path_factory.mktemp("coco")
    images, annotations, data = make_coco(folder, [11, 12, 13, 14])
    write_image(images / "000000000015.jpg", (64, 80), (10, 10, 40, 40), seed=99)
    data["images"].append({"id": 15, "file_name": "000000000015.jpg", "height": 64, "width": 80})
    annotations.write_text(json.dumps(data))
    return images, annotations, data


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, weights_file, coco) -> dict[str, Path]:
    """A full run and a --limit 2 run of the COCO fixture."""
    images, annotations, _ = coco
    root = tmp_path_factory.mktemp("runs")
    runs = {"full": root / "full", "limit2": root / "limit2"}
    assert coco_run(weights_file("dinov2_reg"), images, annotations, runs["full"]).exit_code == 0
    assert coco_run(weights_file("dinov2_reg"), images, annotations, runs["limit2"], "--limit", "2").exit_code == 0
    return runs


# 4. Images without ground truth, annotations that give none.


def test_images_without_ground_truth_are_left_out_and_counted(finished, caplog, weights_file, coco, tmp_path):
    metrics = json.loads((finished["full"] / "metrics.json").read_text())
    per_image = json.loads((finished["full"] / "per_image.json").read_text())["images"]
    assert metrics["n_images"] == 5 and metrics["n_scored"] == 4 and metrics["no_ground_truth"] == 1
    assert metrics["no_ground_truth_images"] == ["000000000015.jpg"]
    hits = sum(item.get("hit", False) for item in per_image)
    assert metrics["corloc"] == pytest.approx(100 * hits / 4, abs=1e-4) and metrics["n_hits"] == hits
    last = per_image[-1]
    assert last["no_ground_truth"] is True and "box" in last and "hit" not in last and "iou" not in last
    # ... and the run says so loudly, before it starts and in its summary.
    images, annotations, _ = coco
    with caplog.at_level(logging.WARNING):
        result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "again")
    assert result.exit_code == 0
    assert "1 of 5 images have no ground-truth box (000000000015.jpg)" in caplog.text
    assert "left out of CorLoc" in caplog.text
    assert f"({hits}/4 hits; 1 without ground truth left out)" in result.output


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


# 5. eval on exactly the run's images; tables refuse mixed image sets.


def test_eval_scores_exactly_the_images_of_a_limit_run(finished, coco):
    images, annotations, _ = coco
    run = finished["limit2"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 2
    data = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]

    plain = invoke("eval", "-p", str(run / "predictions.json"), *data)
    assert plain.exit_code == 0
    assert "scored 2 of the 5 images" in plain.stderr and f"Add --images-of {run}" in plain.stderr
    assert "/4 hits, 2 images without a prediction" in plain.stdout

    same = invoke(
        "eval", "-p", str(run / "predictions.json"), *data, "--images-of", str(run), "--out", str(run.parent / "ev")
    )
    assert same.exit_code == 0, same.output
    assert f"CorLoc {metrics['corloc']:.2f}%  ({metrics['n_hits']}/2 hits, 0 images without a prediction" in same.stdout
    scored = json.loads((run.parent / "ev" / "metrics.json").read_text())
    assert scored["corloc"] == metrics["corloc"] and scored["image_set"] == metrics["image_set"]


def test_eval_images_of_refuses_what_is_not_a_run_of_that_dataset(finished, coco, tmp_path):
    images, annotations, _ = coco
    data_args = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]
    predictions = str(finished["full"] / "predictions.json")
    refused(
        invoke("eval", "-p", predictions, *data_args, "--images-of", str(tmp_path)),
        str(tmp_path),
        "not a finished objdisc run",
    )
    other = tmp_path / "other.json"
    other.write_text(json.dumps(coco_instances([(11, "000000000011.jpg", (75, 100))], {11: [((1, 1, 5, 5), 0)]})))
    refused(
        invoke(
            "eval",
            "-p",
            predictions,
            "-d",
            "coco",
            "--images",
            str(images),
            "--annotations",
            str(other),
            "--images-of",
            str(finished["full"]),
        ),
        "--images-of",
        "a run of coco/instances, not of coco/other",
    )


def test_table_refuses_cells_on_different_image_sets(finished):
    message = refused(invoke("table", str(finished["full"]), str(finished["limit2"])), "scored 2 images", "scored")
    assert "--images-of" in message and "not comparable" in message


# 6. eval --out never writes over a run.


def test_eval_out_refuses_a_run_folder_and_leaves_it_whole(finished, coco, tmp_path):
    images, annotations, _ = coco
    run = tmp_path / "run"
    shutil.copytree(finished["full"], run)
    before = snapshot(run)
    args = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]
    refused(
        invoke("eval", "-p", str(run / "predictions.json"), *args, "--out", str(run)),
        str(run),
        "holds an objdisc run",
        "folder of its own",
    )
    after = snapshot(run)
    after.pop(".objdisc.lock", None)
    before.pop(".objdisc.lock", None)
    assert after == before
    assert (
        invoke("visualize", str(run), "--limit", "1", "--out", str(tmp_path / "vis"), "--device", "cpu").exit_code == 0
    )

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused(invoke("eval", "-p", str(run / "predictions.json"), *args, "--out", str(mine)), str(mine), "did not write")
    assert (mine / "notes.txt").read_text() == "mine" and not (mine / "metrics.json").exists()

    # An eval folder is eval's own: a second eval replaces it.
    ev = tmp_path / "ev"
    for name in ("a", "b"):
        assert (
            invoke("eval", "-p", str(run / "predictions.json"), *args, "--out", str(ev), "--name", name).exit_code == 0
        )
    assert json.loads((ev / "metrics.json").read_text())["producer"]["backbone"] == "b"
    refused(invoke("visualize", str(ev), "--out", str(tmp_path / "vis-ev")), str(ev), "not a finished objdisc run")


# 7. Tables over a folder of mixed things.


def test_table_skips_non_runs_and_labels_duplicates_and_local_weights(finished, tmp_path, weights_file):
    from objdisc.utils.hashing import sha256_file

    (tmp_path / "notes").mkdir()
    (tmp_path / "file.txt").write_text("x")
    twin = tmp_path / "full-again"
    shutil.copytree(finished["full"], twin)
    result = invoke("table", str(finished["full"]), str(tmp_path / "notes"), str(tmp_path / "file.txt"), str(twin))
    assert result.exit_code == 0, result.output
    assert f"skipped {tmp_path / 'notes'}: not a finished run (metrics.json missing)" in result.stderr
    assert f"skipped {tmp_path / 'file.txt'}: not a run folder" in result.stderr
    sha = sha256_file(weights_file("dinov2_reg"))[:8]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| dinov2")]
    assert [row.split(" | ")[0] for row in rows] == [
        f"| dinov2_reg_vits14 [local {sha}] [full]",
        f"| dinov2_reg_vits14 [local {sha}] [full-again]",
    ]
    nothing = invoke("table", str(tmp_path / "notes"))
    refused(nothing, "no finished run among the folders given", "notes")


# 12. The progress bar's hit counter is never an image behind.


def test_hits_counter_counts_the_image_just_done(weights_file, coco, tmp_path, monkeypatch):
    import objdisc.engine.runner

    # Draw every update, as a run with slow images does.
    monkeypatch.setattr(objdisc.engine.runner, "tqdm", functools.partial(tqdm.tqdm, mininterval=0, miniters=1))
    images, annotations, _ = coco
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o", "--limit", "4", "--progress")
    assert result.exit_code == 0, result.output
    frames = re.findall(r"(\d)/4 \[[^\]]*?hits (\d)/(\d)\]", result.stderr)
    assert frames, result.stderr
    assert {done for done, _, _ in frames} == {"1", "2", "3", "4"}, frames
    assert all(done == counted for done, _, counted in frames), frames
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert frames[-1] == ("4", str(metrics["n_hits"]), "4")
