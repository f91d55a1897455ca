"""The journal: torn lines, rank files read in any order, objdisc 0.1 journals, and the lazy header."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import folder_run, refused

from objdisc.engine.journal import Journal, JournalMismatchError, read_journals
from objdisc.engine.run_files import entry_objects

SETTINGS = {"format": 2, "method": "lost", "k_patches": 100}


def entry(image_id: int, file_name: str) -> dict:
    objects = {"boxes": [[0, 0, 1, 1]], "scores": [1.0], "seeds": [0]}
    return {"image_id": image_id, "file_name": file_name, "hw": [2, 2], "objects": objects, "error": None}


def test_a_torn_last_line_is_ignored_and_closed(tmp_path: Path):
    with Journal(tmp_path, 0, SETTINGS) as journal:
        journal.append(entry(1, "a.jpg"))
    with open(tmp_path / "rank0.jsonl", "a") as f:
        f.write('{"image_id": 2, "file_na')  # killed mid-write
    assert set(read_journals(tmp_path, SETTINGS)[0]) == {1}
    with Journal(tmp_path, 0, SETTINGS) as journal:
        journal.append(entry(3, "c.jpg"))
    assert set(read_journals(tmp_path, SETTINGS)[0]) == {1, 3}


def test_a_result_is_never_hidden_by_an_older_failure_in_another_rank_file(tmp_path: Path):
    failed = {**entry(7, "g.jpg"), "objects": None, "error": "out of memory"}
    with Journal(tmp_path, 1, SETTINGS) as journal:  # first run, 2 ranks: rank 1 failed on image 7
        journal.append(failed)
    with Journal(tmp_path, 0, SETTINGS) as journal:  # resumed on 1 rank: image 7 got its box
        journal.append(entry(7, "g.jpg"))
    assert read_journals(tmp_path, SETTINGS)[0][7]["objects"]["boxes"] == [[0, 0, 1, 1]]
    with Journal(tmp_path, 2, SETTINGS) as journal:  # and a failure alone is still reported
        journal.append({**failed, "image_id": 8})
    assert read_journals(tmp_path, SETTINGS)[0][8]["error"] == "out of memory"


def test_no_image_no_journal_file(tmp_path: Path):
    with Journal(tmp_path / "journal", 0, SETTINGS):
        pass  # a run that failed before its first image
    assert not (tmp_path / "journal").exists()


def test_a_journal_of_objdisc_0_1_is_read_under_its_legacy_settings(tmp_path: Path):
    legacy = {"method": "lost", "k_patches": 100}  # no "format", as 0.1 wrote them
    old = {"image_id": 4, "file_name": "d.jpg", "hw": [2, 2], "box": [0, 1, 2, 2], "seed": 3, "error": None}
    with Journal(tmp_path, 0, legacy) as journal:
        journal.append(old)
    with pytest.raises(JournalMismatchError, match="other settings"):
        read_journals(tmp_path, SETTINGS)
    entries, was_legacy = read_journals(tmp_path, SETTINGS, legacy)
    assert was_legacy and set(entries) == {4}
    objects = entry_objects(entries[4])
    assert objects.boxes.tolist() == [[0, 1, 2, 2]] and objects.scores.tolist() == [1.0]
    assert objects.seeds.tolist() == [3] and objects.segmentation is None
    header = json.loads((tmp_path / "rank0.jsonl").read_text().splitlines()[0])
    assert header["settings"] == legacy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("second_header", "line 4 is a second journal header: two runs wrote into this folder at once"),
        ("not_an_entry", "line 3 is not a journal entry"),
        ("garbage_file", "not an objdisc journal"),
        ("binary_file", "not an objdisc journal"),
    ],
)
def test_a_damaged_journal_is_refused_with_the_fix(tmp_path: Path, weights_file, two_images, damage: str, message: str):
    out = tmp_path / "run"
    assert folder_run(weights_file("dinov2_reg"), two_images, out).exit_code == 0
    journal = out / "journal" / "rank0.jsonl"
    lines = journal.read_text().splitlines()
    if damage == "second_header":
        journal.write_text("\n".join([*lines, lines[0], lines[1]]) + "\n")
    elif damage == "not_an_entry":
        journal.write_text("\n".join([lines[0], lines[1], '{"hello": 1}', *lines[2:]]) + "\n")
    elif damage == "garbage_file":
        journal.write_text("hello\nworld\n")
    else:
        journal.write_bytes(bytes(range(256)) * 4)
    refused(folder_run(weights_file("dinov2_reg"), two_images, out), str(journal), message, "--overwrite")
    # ... and --overwrite does start over, giving the same boxes.
    assert folder_run(weights_file("dinov2_reg"), two_images, out, "--overwrite").exit_code == 0
    assert json.loads((out / "metrics.json").read_text())["n_images"] == 2


def test_a_torn_line_is_still_read_as_a_kill_mid_write(tmp_path: Path, weights_file, two_images):
    out = tmp_path / "run"
    assert folder_run(weights_file("dinov2_reg"), two_images, out).exit_code == 0
    journal = out / "journal" / "rank0.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([*lines[:2], lines[2][:10]]))  # the last image torn mid-write
    result = folder_run(weights_file("dinov2_reg"), two_images, out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["n_resumed"] == 1
