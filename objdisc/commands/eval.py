"""``objdisc eval``: every metric of any COCO-results file, so other tools' objects sit in the same table.

The file is scored by :func:`objdisc.evaluation.score_file.evaluate` (the evaluators ``objdisc
run`` uses); this module reads run folders (``--images-of``, the note on a ``--limit`` run's
file) and writes ``--out`` as a folder ``objdisc table`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objdisc.datasets import Dataset, DatasetArgs
from objdisc.engine.out_folder import check_ours, check_out, is_run_folder, lock_out
from objdisc.engine.run_files import read_metrics, read_per_image
from objdisc.errors import ObjdiscError, OptionError
from objdisc.evaluation import EVALUATORS
from objdisc.evaluation.score_file import evaluate, select_records
from objdisc.utils.hashing import sha256_file
from objdisc.utils.jsonio import read_json, write_json_atomic

EVALUATED_BY = "objdisc eval"


def run_images(run: Path) -> tuple[str, list[int]]:
    """The dataset name and image ids an ``objdisc run`` folder scored (its ``per_image.json``).

    Raises:
        ObjdiscError: the folder is not a finished objdisc run.
    """
    run = Path(run)
    try:
        images = read_per_image(run)
        dataset = str(read_metrics(run)["dataset"])
        return dataset, [int(item["image_id"]) for item in images]
    except FileNotFoundError as exc:
        raise ObjdiscError(
            f"--images-of {run}: not a finished objdisc run ({Path(exc.filename).name} missing)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ObjdiscError(f"--images-of {run}: unreadable run files ({type(exc).__name__}: {exc})") from None


def limited_run_note(predictions: Path, dataset: Dataset) -> str | None:
    """A hint when ``predictions`` is an objdisc run's file made on fewer images than ``dataset``."""
    folder = Path(predictions).parent
    try:
        run_dataset, ids = run_images(folder)
    except ObjdiscError:
        return None
    if run_dataset != dataset.name or len(ids) >= len(dataset.records):
        return None
    return (
        f"note: {folder} scored {len(ids)} of the {len(dataset.records)} images of {dataset.name}; the others "
        f"count as misses here. Add --images-of {folder} to score the same images as the run"
    )


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``objdisc eval`` takes (see :func:`run`).

    Attributes:
        predictions: a COCO results file (any tool), or a folder of saliency PNG maps.
        data: the dataset to score against.
        images_of: score only the images this objdisc run folder scored (e.g. a ``--limit`` run).
        name: the row label for ``objdisc table`` (default: the file's stem).
        out: write ``metrics.json`` and ``run.json`` here, for ``objdisc table``.
        metrics: the metrics to compute (default: every one the dataset allows).
    """

    predictions: Path
    data: DatasetArgs
    images_of: Path | None = None
    name: str | None = None
    out: Path | None = None
    metrics: tuple[str, ...] | None = None


def run(config: EvalConfig) -> tuple[dict[str, Any], list[str]]:
    """``objdisc eval``: score the file on the dataset (or on the images of ``images_of``), write
    ``out`` when asked.

    Returns:
        The metrics (:func:`evaluate`) and notes for the user (e.g. the file is a ``--limit`` run's).

    Raises:
        ObjdiscError: a bad dataset, predictions file, ``images_of`` or ``out``.
    """
    if config.out is not None:
        check_eval_out(Path(config.out))  # before the scoring, and without touching it
    data = config.data.load()
    ids, notes = None, []
    if config.images_of is not None:
        run_dataset, ids = run_images(config.images_of)
        if run_dataset != data.name:
            raise ObjdiscError(f"--images-of {config.images_of}: a run of {run_dataset}, not of {data.name}")
        select_records(data, ids, f"--images-of {config.images_of}")
    else:
        note = limited_run_note(config.predictions, data)
        notes += [note] if note else []
    metrics = evaluate(data, config.predictions, ids, config.metrics)
    outside = metrics["boxes_outside"]
    if outside["n"]:
        first = outside["first"]
        x1, y1, x2, y2 = first["bbox_xyxy"]
        notes.append(
            f"warning: {outside['n']} of the {outside['n_checked']} predicted boxes reach past their image by more "
            f"than a pixel (first: image {first['image_id']}, {first['image_wh'][0]}x{first['image_wh'][1]}, read "
            f"as [x, y, w, h] = [{x1:g}, {y1:g}, {x2 - x1:g}, {y2 - y1:g}]): is {config.predictions} in "
            "[x1, y1, x2, y2]? COCO results hold [x, y, w, h]; convert the boxes, or they are scored as read"
        )
    if config.out is not None:
        label = config.name or Path(config.predictions).stem
        write_eval(config.out, metrics, config.predictions, label, config.images_of)
    return metrics, notes


def write_eval(
    out: Path, metrics: dict[str, Any], predictions: Path, label: str, images_of: Path | None = None
) -> None:
    """``metrics.json`` and ``run.json`` in ``out``, readable by ``objdisc table`` as a row ``label``.

    ``out`` is locked while written; a folder holding an ``objdisc run`` or files objdisc did
    not write is refused (an earlier ``objdisc eval`` folder is replaced).

    Raises:
        OptionError: ``out`` cannot be used.
    """
    from objdisc.utils.provenance import now_iso
    from objdisc.version import __version__

    out = Path(out)
    check_eval_out(out)
    with lock_out(out, "objdisc eval"):
        _check_not_a_run(out)  # again, under the lock
        made_by = {
            "backbone": label,
            "predictions": {"path": str(predictions), "sha256": _digest(Path(predictions))},
            "images_of": str(images_of) if images_of is not None else None,
            "versions": {"objdisc": __version__},
            "evaluated_by": EVALUATED_BY,
        }
        write_json_atomic(out / "metrics.json", {"producer": made_by, **metrics})
        write_json_atomic(out / "run.json", {"producer": made_by, "status": "finished", "finished": now_iso()})


def check_eval_out(out: Path) -> None:
    """Refuse, without creating anything, an ``--out`` eval cannot use: a file, a busy folder, a folder
    of others' files, or an objdisc run's folder (whose run.json and metrics.json eval would replace).

    Raises:
        OptionError: naming the folder and what to do.
    """
    check_out(out)
    _check_not_a_run(out)


def _check_not_a_run(out: Path) -> None:
    check_ours(out)
    if out.is_dir() and is_run_folder(out) and not is_eval_folder(out):
        raise OptionError(
            f"--out {out}: holds an objdisc run, whose run.json and metrics.json eval would replace; "
            "give eval a folder of its own"
        )


def _digest(path: Path) -> str:
    """sha256 of a file; of a folder, of its files' names and sha256s in name order."""
    if not path.is_dir():
        return sha256_file(path)
    import hashlib

    lines = [f"{p.name} {sha256_file(p)}" for p in sorted(path.iterdir()) if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def is_eval_folder(folder: Path) -> bool:
    """Whether ``folder`` was written by ``objdisc eval --out`` (and holds no run's journal)."""
    if any((folder / "journal").glob("rank*.jsonl")):
        return False
    try:
        info = read_json(folder / "run.json")
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and (info.get("producer") or {}).get("evaluated_by") == EVALUATED_BY


def report(metrics: dict[str, Any]) -> str:
    """What ``objdisc eval`` prints: a line per metric block and the counts."""
    lines = [EVALUATORS[name].summary_line(block) for name, block in metrics["metrics"].items() if name in EVALUATORS]
    lines.append(
        f"{metrics['n_images']} images: {metrics['n_missing']} without a prediction, "
        f"{metrics['n_unknown']} predictions for images not scored"
        + (f", {metrics['no_ground_truth']} without ground truth left out" if metrics["no_ground_truth"] else "")
    )
    return "\n".join(lines)


__all__ = [
    "EVALUATED_BY",
    "EvalConfig",
    "check_eval_out",
    "is_eval_folder",
    "limited_run_note",
    "report",
    "run",
    "run_images",
    "write_eval",
]
