"""``objdisc merge RUN ... --out MERGED``: finished runs over parts of one dataset as one run.

The parts are the shards of a job array (``--shard i/N``), runs over subsets of a class-folder
tree or of tar shards (``--classes``), or any finished runs of one dataset with the same settings
whose images do not overlap. The merged folder is a run folder like any other: one journal
holding every part's entries (under the parts' common settings: a rerun into it rescores, as a
finished run does), and ``predictions.json``, ``gt.json``, ``per_image.json`` and ``metrics.json``
written from it in dataset order, exactly as one run over all the images writes them; with
``--pseudo-labels FILE``, one pseudo-label file (unique image and annotation ids) a detector
trains on. ``run.json`` lists the parts.

Refused, before anything is written: a part that is not a finished objdisc run, parts made with
other settings (naming each setting that differs), of another dataset or of other dataset options
than the class folders or shards they take, and parts holding the same image (naming it).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from objdisc.commands.run import RunConfig, select_records
from objdisc.datasets import Dataset, ImageRecord
from objdisc.engine.journal import read_journals, settings_key
from objdisc.engine.out_folder import check_not_a_run_file, check_out, claim_file, lock_out
from objdisc.engine.run_files import write_outputs, write_pseudo_labels
from objdisc.errors import ObjdiscError, OptionError
from objdisc.evaluation import default_evaluators
from objdisc.evaluation.coco_export import is_pseudo_label_file
from objdisc.utils.jsonio import read_json, write_json_atomic
from objdisc.utils.provenance import now_iso

MONOTONIC_IDS = ("class-folders", "tars")  # dataset kinds whose ids follow the dataset's order


@dataclass(frozen=True)
class MergeConfig:
    """Everything ``objdisc merge`` takes.

    Attributes:
        runs: the finished run folders (parts of one dataset).
        out: the merged run folder (new or empty, or an earlier merge's).
        pseudo_labels: also write the merged objects as one COCO pseudo-label file.
    """

    runs: list[Path]
    out: Path
    pseudo_labels: Path | None = None


@dataclass
class _Part:
    folder: Path
    info: dict[str, Any]
    config: RunConfig
    settings: dict[str, Any]
    dataset: Dataset
    records: list[ImageRecord]


def _read_part(folder: Path) -> _Part:
    """One finished run folder, its settings and the records it ran on."""
    try:
        info = read_json(folder / "run.json")
    except (OSError, ValueError):
        raise ObjdiscError(
            f"{folder}: not an objdisc run folder (no readable run.json); merge takes finished runs"
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("options"), dict):
        raise ObjdiscError(f"{folder}: run.json holds no run options (an `objdisc eval` folder?); merge takes runs")
    if info.get("status") != "finished":
        raise ObjdiscError(
            f"{folder}: the run is not finished (status {info.get('status')!r}); rerun its command to finish it "
            "(it resumes), then merge"
        )
    journals = sorted((folder / "journal").glob("rank*.jsonl"))
    if not journals:
        raise ObjdiscError(f"{folder}: no journal (journal/rank*.jsonl): merge reads each part's journal")
    with open(journals[0]) as f:
        header = json.loads(f.readline())
    config = RunConfig.from_options(info["options"])
    dataset = config.data.load()
    return _Part(folder, info, config, header["settings"], dataset, select_records(config, dataset))


def check_parts(parts: list[_Part]) -> None:
    """Refuse parts made with other settings, of other dataset options, or sharing an image.

    Raises:
        ObjdiscError: naming the folders and what differs, or the image two parts hold.
    """
    first = parts[0]
    for part in parts[1:]:
        if settings_key(part.settings) != settings_key(first.settings):
            theirs, ours = part.settings, first.settings
            diff = sorted(k for k in {*ours, *theirs} if ours.get(k) != theirs.get(k))
            shown = "; ".join(
                f"{k}: {ours.get(k)!r} in {first.folder}, {theirs.get(k)!r} in {part.folder}" for k in diff
            )
            raise ObjdiscError(f"merge: the runs were made with other settings ({shown}); merge parts of one run only")
        a, b = replace(first.config.data, classes=None), replace(part.config.data, classes=None)
        if a != b:
            diff = sorted(k for k in a.__dataclass_fields__ if getattr(a, k) != getattr(b, k))
            raise ObjdiscError(
                f"merge: {first.folder} and {part.folder} read other datasets ({', '.join(diff)} differ); merge parts "
                "of one dataset only"
            )
    owner: dict[int, int] = {}
    for n, part in enumerate(parts):
        for record in part.records:
            other = owner.setdefault(record.image_id, n)
            if other != n:
                raise ObjdiscError(
                    f"merge: {record.file_name} is in both {parts[other].folder} and {part.folder}; parts must not "
                    "overlap (shards of one --shard i/N series, or runs over other --classes)"
                )


def merged_records(parts: list[_Part]) -> list[ImageRecord]:
    """Every part's records in the dataset's order."""
    records = [r for part in parts for r in part.records]
    same_selection = all(p.config.data == parts[0].config.data for p in parts)
    if same_selection and parts[0].config.data.dataset not in MONOTONIC_IDS:
        position = {r.image_id: i for i, r in enumerate(parts[0].dataset.records)}
        return sorted(records, key=lambda r: position[r.image_id])
    return sorted(records, key=lambda r: r.image_id)  # class folders and shards: ids follow the order


def _check_not_a_run(out: Path) -> None:
    """Refuse an ``--out`` holding a run that is not an earlier merge (its journal would be replaced)."""
    if not (out / "run.json").is_file():
        return
    try:
        info = read_json(out / "run.json")
    except (OSError, ValueError):
        info = None
    if not (isinstance(info, dict) and "merged_from" in info):
        raise OptionError(f"--out {out}: holds an objdisc run (not a merge); give merge a folder of its own")


def run(config: MergeConfig) -> dict[str, Any]:
    """Merge the runs into ``config.out`` (module docstring); returns the merged ``metrics.json``.

    Raises:
        ObjdiscError: a part or an output that cannot be used, naming it and why.
    """
    if not config.runs:
        raise OptionError("merge: give the run folders to merge")
    out = Path(config.out)
    if any(Path(r).resolve() == out.resolve() for r in config.runs):
        raise OptionError(f"--out {out}: is one of the runs merged; give a folder of its own")
    check_out(out)
    _check_not_a_run(out)
    if config.pseudo_labels is not None:
        check_not_a_run_file(Path(config.pseudo_labels), out, "--pseudo-labels")
        claim_file(Path(config.pseudo_labels), "objdisc merge --pseudo-labels", True, is_pseudo_label_file,
                   "--pseudo-labels")  # fmt: skip
    parts = [_read_part(Path(folder)) for folder in config.runs]
    check_parts(parts)
    records = merged_records(parts)
    first = parts[0]
    dataset = replace(
        first.dataset,
        records=records,
        warnings=[w for part in parts for w in part.dataset.warnings],
    )
    made_by = first.info["producer"]
    with lock_out(out, "objdisc merge"):
        journal = out / "journal"
        journal.mkdir(exist_ok=True)
        for old in journal.glob("rank*.jsonl"):
            old.unlink()  # an earlier merge's, into this very folder
        with open(journal / "rank0.jsonl", "w") as merged:
            merged.write(json.dumps({"key": settings_key(first.settings), "settings": first.settings}) + "\n")
            for part in parts:
                with read_journals(part.folder / "journal", part.settings)[0] as entries:
                    for record in part.records:
                        entry = entries.get(record.image_id)
                        if entry is None or entry["file_name"] != record.file_name:
                            raise ObjdiscError(f"{part.folder}: its journal holds no result for {record.file_name}")
                        merged.write(json.dumps(entry) + "\n")
        with read_journals(journal, first.settings)[0] as entries:
            evaluators = default_evaluators(dataset, first.config.metrics)
            metrics = write_outputs(out, dataset, records, entries, made_by, evaluators)
            metrics.update(merged_from=[str(p.folder) for p in parts], n_processed=0, n_resumed=len(records))
            write_json_atomic(out / "metrics.json", metrics)
            options = {**first.info["options"], "out": str(out), "shard": None, "classes": None, "limit": None}
            write_json_atomic(out / "run.json", {
                "producer": made_by,
                "options": options,
                "dataset": first.info.get("dataset"),
                "n_records": len(records),
                "merged_from": [str(p.folder) for p in parts],
                "command": sys.argv,
                "started": now_iso(),
                "status": "finished",
                "finished": now_iso(),
            })  # fmt: skip
            if config.pseudo_labels is not None:
                write_pseudo_labels(Path(config.pseudo_labels), records, entries, made_by)
    return metrics


def report(metrics: dict[str, Any], config: MergeConfig) -> str:
    """What ``objdisc merge`` prints."""
    from objdisc.evaluation import EVALUATORS

    lines = [
        f"merged     {len(metrics['merged_from'])} runs: {metrics['n_images']} images, {metrics['n_objects']} objects, "
        f"{metrics['n_skipped']} skipped"
    ]
    lines += [EVALUATORS[n].summary_line(b) for n, b in metrics["metrics"].items() if n in EVALUATORS]
    files = "predictions.json, gt.json, per_image.json, metrics.json, run.json, journal/"
    lines.append(f"output     {config.out}/ ({files})")
    if config.pseudo_labels is not None:
        lines.append(f"pseudo     {config.pseudo_labels}")
    return "\n".join(lines)


__all__ = ["MergeConfig", "check_parts", "merged_records", "report", "run"]
