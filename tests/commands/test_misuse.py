"""The third misuse trial (issue 27): each case through the real CLI, as a new user would meet it."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import coco_run, folder_run, invoke, make_coco, refused, snapshot, write_image
from planted_model import BLOCK, UNIT

REPO = Path(__file__).parents[2]


def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a model is built: the refusal must come before."""
    never = "the model was built before the refusal"
    monkeypatch.setattr("objdisc.models.backbones.create_backbone", lambda *a, **k: pytest.fail(never))


# 1. --pseudo-labels where it cannot be written


def test_pseudo_labels_in_a_read_only_place_are_refused_before_the_model(
    tmp_path: Path, weights_file, two_images, monkeypatch: pytest.MonkeyPatch
):
    locked = tmp_path / "read-only"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    no_model(monkeypatch)
    out = tmp_path / "o"
    result = folder_run(weights_file("dinov2_reg"), two_images, out, "--pseudo-labels", locked / "labels.json")
    refused(result, "--pseudo-labels", str(locked / "labels.json"), "writable")
    assert not out.exists()  # nothing written, the folder not even made


def test_a_pseudo_label_write_failing_at_the_end_leaves_every_other_file(
    tmp_path: Path, weights_file, two_images, monkeypatch: pytest.MonkeyPatch
):
    import objdisc.engine.runner as runner

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "labels.json"))

    monkeypatch.setattr(runner, "write_pseudo_labels", read_only)
    out, weights = tmp_path / "o", weights_file("dinov2_reg")
    result = folder_run(weights, two_images, out, "--pseudo-labels", tmp_path / "labels.json")
    refused(result, "--pseudo-labels", "Read-only file system", f"the run's files are in {out}", "rerun")
    for name in ("predictions.json", "gt.json", "per_image.json", "metrics.json", "run.json", "journal/rank0.jsonl"):
        assert (out / name).is_file(), name
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    monkeypatch.undo()
    again = folder_run(weights, two_images, out, "--pseudo-labels", tmp_path / "labels.json")
    assert again.exit_code == 0, again.output
    assert json.loads((out / "metrics.json").read_text())["n_resumed"] == 2  # nothing computed again
    assert len(json.loads((tmp_path / "labels.json").read_text())["images"]) == 2


# 2. COCO file names with a folder prefix the image folder does not have


def prefixed(tmp_path: Path) -> tuple[Path, Path]:
    images, annotations, data = make_coco(tmp_path, [21, 22, 23, 24])
    for entry in data["images"]:
        entry["file_name"] = f"train2017/{entry['file_name']}"
    annotations.write_text(json.dumps(data))
    return images, annotations


def test_file_names_with_a_folder_prefix_are_refused_naming_the_fix(
    tmp_path: Path, weights_file, monkeypatch: pytest.MonkeyPatch
):
    images, annotations = prefixed(tmp_path)
    no_model(monkeypatch)
    out = tmp_path / "o"
    result = coco_run(weights_file("dinov2_reg"), images, annotations, out)
    refused(result, "4 of the 4 images looked for are missing", str(images / "train2017"), "prefix 'train2017/'")
    assert not out.exists()


def test_the_folder_that_holds_the_prefix_is_named_when_there_is_one(tmp_path: Path, weights_file):
    images, annotations = prefixed(tmp_path)
    (tmp_path / "coco").mkdir()
    shutil.move(images, tmp_path / "coco" / "train2017")
    wrong = tmp_path / "coco" / "train2017"  # the folder of the images: the prefix is doubled
    result = coco_run(weights_file("dinov2_reg"), wrong, annotations, tmp_path / "o")
    refused(result, f"give --images {tmp_path / 'coco'}")
    assert coco_run(weights_file("dinov2_reg"), tmp_path / "coco", annotations, tmp_path / "o").exit_code == 0


def test_a_few_missing_images_are_skipped_not_refused(tmp_path: Path, weights_file):
    images, annotations, _ = make_coco(tmp_path, [31, 32, 33, 34])
    (images / "000000000032.jpg").unlink()
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert [s["file_name"] for s in metrics["skipped"]] == ["000000000032.jpg"]


# 3. limits no image can meet, and runs whose every image is skipped


def test_a_max_patches_no_image_meets_is_refused_before_the_run(
    tmp_path: Path, weights_file, two_images, monkeypatch: pytest.MonkeyPatch
):
    no_model(monkeypatch)
    result = folder_run(weights_file("dinov2_reg"), two_images, tmp_path / "o", "--max-patches", "1")
    refused(result, "--max-patches 1", "makes 20 patches of 14 px", "every image would be skipped")
    result = folder_run(weights_file("dinov2_reg"), two_images, tmp_path / "o", "--method", "maskcut",
                        "--no-crf", "--max-patches", "100")  # fmt: skip
    refused(result, "--max-patches 100", "476x476 pixels, 1,156 patches", "--fixed-size")
    assert not (tmp_path / "o").exists()


def test_a_run_whose_every_image_is_skipped_exits_with_an_error(tmp_path: Path, weights_file):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        (images / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a photo")
    result = folder_run(weights_file("dinov2_reg"), images, tmp_path / "o")
    refused(result, "every one of the 2 images was skipped", "truncated JPEG", "metrics.json")
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["n_skipped"] == 2  # the reasons stay


# 4. eval of a results file in [x1, y1, x2, y2]


def test_eval_of_xyxy_boxes_warns_naming_the_format(tmp_path: Path, finished, coco):
    images, annotations, _ = coco
    results = json.loads((finished["full"] / "predictions.json").read_text())
    for r in results:
        x, y, w, h = r["bbox"]
        r["bbox"] = [x + 20, y + 20, x + w + 20, y + h + 20]  # corners, as a tool writing xyxy would
    path = tmp_path / "xyxy.json"
    path.write_text(json.dumps(results))
    result = invoke("eval", "-p", path, "-d", "coco", "--images", images, "--annotations", annotations,
                    "--out", tmp_path / "ev")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "predicted boxes reach past their image" in result.stderr and "[x1, y1, x2, y2]?" in result.stderr
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())["boxes_outside"]
    assert saved["n"] >= 1 and saved["n_checked"] == len(results)
    plain = invoke("eval", "-p", finished["full"] / "predictions.json", "-d", "coco", "--images", images,
                   "--annotations", annotations)  # fmt: skip
    assert plain.exit_code == 0 and "reach past" not in plain.stderr  # objdisc's own boxes never do


# 5. test-time-register neurons found on other weights


def test_neurons_found_on_other_weights_are_warned_about_naming_both(tmp_path: Path, planted, flat_images, caplog):
    from objdisc.utils.hashing import sha256_file

    other = "ab" * 32
    neurons = tmp_path / "neurons.json"
    producer = {"backbone": "dinov2_vits14", "weights": {"source": "local", "sha256": other}}
    neurons.write_text(json.dumps({"producer": producer, "ranked": [[BLOCK, UNIT]]}))
    args = ["run", "-b", "dinov2_vits14", "--weights", planted, "-d", "folder", "--images", flat_images,
            "--workers", "0", "--test-time-registers", neurons]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = invoke(*args, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "found on other weights" in caplog.text and other[:12] in caplog.text
    assert sha256_file(planted)[:12] in caplog.text
    caplog.clear()
    producer["weights"]["sha256"] = sha256_file(planted)
    neurons.write_text(json.dumps({"producer": producer, "ranked": [[BLOCK, UNIT]]}))
    with caplog.at_level(logging.WARNING):
        same = invoke(*args, "--out", tmp_path / "same")
    assert same.exit_code == 0 and "other weights" not in caplog.text


# 6. and 7. images objdisc does not decode, links to folders


def test_every_image_like_file_is_listed_decoded_or_skipped_with_why(tmp_path: Path, weights_file):
    images = tmp_path / "images"
    write_image(images / "a.jpg", (56, 70), (10, 10, 40, 40), seed=1)
    (images / "anim.gif").write_bytes(b"GIF89a" + bytes(32))
    (images / "no_suffix").write_bytes((images / "a.jpg").read_bytes())  # a JPEG all the same
    (images / "notes.txt").write_text("not an image")
    result = folder_run(weights_file("dinov2_reg"), images, tmp_path / "o")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    (skipped,) = metrics["skipped"]
    assert skipped["file_name"] == "anim.gif" and "a GIF file" in skipped["reason"] and "convert" in skipped["reason"]
    assert metrics["n_images"] == 3 and metrics["n_images_with_objects"] == 2  # a.jpg and no_suffix


def test_links_to_folders_are_followed_and_loops_reported(tmp_path: Path, weights_file):
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    write_image(images / "a.jpg", (56, 70), (10, 10, 40, 40), seed=1)
    write_image(elsewhere / "b.jpg", (56, 70), (10, 10, 40, 40), seed=2)
    (images / "linked").symlink_to(elsewhere, target_is_directory=True)
    (images / "loop").symlink_to(images, target_is_directory=True)
    result = folder_run(weights_file("dinov2_reg"), images, tmp_path / "o")
    assert result.exit_code == 0, result.output
    gt = json.loads((tmp_path / "o" / "gt.json").read_text())
    assert [i["file_name"] for i in gt["images"]] == ["a.jpg", "linked/b.jpg"]
    warnings = json.loads((tmp_path / "o" / "metrics.json").read_text())["dataset_warnings"]
    assert [w["file_name"] for w in warnings] == ["loop"] and "a loop, not followed" in warnings[0]["message"]


# 8. method options out of their range


@pytest.mark.parametrize(
    ("method", "option", "value", "message"),
    [
        ("maskcut", "--tau", "2", "--tau is a cosine similarity: it must lie in [-1, 1], got 2.0"),
        ("maskcut", "--tau", "-5", "--tau is a cosine similarity: it must lie in [-1, 1], got -5.0"),
        ("tokencut", "--tau", "1.5", "--tau is a cosine similarity: it must lie in [-1, 1], got 1.5"),
        ("tokencut", "--eps", "1", "--eps must be below 1 (the weight of a linked pair), got 1.0"),
        ("dinoseg", "--keep-mass", "1.2", "--keep-mass must lie strictly between 0 and 1, got 1.2"),
    ],
)
def test_method_options_out_of_range_are_refused(method, option, value, message, tmp_path: Path, two_images):
    result = invoke("run", "-b", "dino", "-d", "folder", "--images", two_images, "--out", tmp_path / "o",
                    "--method", method, option, value)  # fmt: skip
    refused(result, message)


def test_every_float_option_of_every_method_has_a_range():
    """A new method's float options must say what they take (NaN at least is refused)."""
    from objdisc.errors import OptionError
    from objdisc.methods import all_options

    for items in all_options().values():
        for _, info in items:
            if info.type is float:
                with pytest.raises(OptionError):
                    info.check(float("nan"))


# 9. a rescore keeps the blocks it did not recompute


def test_a_rescore_with_fewer_metrics_keeps_the_other_blocks(tmp_path: Path, weights_file, finished, coco, caplog):
    images, annotations, _ = coco
    out = tmp_path / "run"
    shutil.copytree(finished["full"], out)
    before = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"corloc", "ap"} <= set(before)
    with caplog.at_level(logging.WARNING):
        result = coco_run(weights_file("dinov2_reg"), images, annotations, out, "--metrics", "corloc")
    assert result.exit_code == 0, result.output
    after = json.loads((out / "metrics.json").read_text())
    assert after["metrics"] == before and after["kept_from_earlier_scoring"] == sorted(set(before) - {"corloc"})
    assert "kept the" in caplog.text


# 10. a refusal leaves the file system as it found it


def test_a_run_refused_for_want_of_weights_creates_nothing(tmp_path: Path, two_images, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "new" / "o"
    result = invoke("run", "-b", "dinov2_reg", "-d", "folder", "--images", two_images, "--out", out)
    refused(result, "--weights")
    assert not (tmp_path / "new").exists() and not (tmp_path / "empty-cache").exists()


def test_a_run_whose_weights_do_not_load_leaves_no_folder(tmp_path: Path, two_images):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    out = tmp_path / "o"
    result = invoke("run", "-b", "dinov2_reg", "--weights", broken, "-d", "folder", "--images", two_images,
                    "--out", out, "--workers", "0")  # fmt: skip
    refused(result, str(broken))
    assert not out.exists()


def test_refused_commands_leave_no_lock_in_a_users_folder(tmp_path: Path, weights_file, two_images, finished):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    before = snapshot(mine)
    args = ["-b", "dinov2_reg", "--weights", weights_file("dinov2_reg"), "-d", "folder", "--images", two_images]
    refused(invoke("norms", *args, "--out", mine), "did not write")
    refused(invoke("visualize", finished["full"], "--out", mine), "did not write")
    refused(invoke("eval", "-p", finished["full"] / "predictions.json", "-d", "folder", "--images", two_images,
                   "--out", mine))  # fmt: skip
    refused(invoke("run", *args, "--out", mine), "did not write")
    assert snapshot(mine) == before and not (mine / ".objdisc.lock").exists()


# 11. the Python API from the folder that holds the clone


def test_the_package_imports_from_the_folder_holding_the_clone(tmp_path: Path):
    """A clone named objdisc/ in the working folder must not shadow the package (a namespace package)."""
    (tmp_path / "objdisc").symlink_to(REPO, target_is_directory=True)
    script = textwrap.dedent("""
        import objdisc
        from objdisc import KeyExtractor, RunConfig, run
        assert objdisc.__file__.endswith("objdisc/__init__.py"), objdisc.__file__
        assert {"run", "RunConfig", "KeyExtractor", "MaskCut"} <= set(dir(objdisc))
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
