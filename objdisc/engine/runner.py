"""Execute a resolved run: objects of every image, journaled, then the run's files; one process or torchrun.

:func:`execute` takes a :class:`~objdisc.engine.plan.RunPlan` (``objdisc run`` builds it:
:func:`objdisc.commands.run.resolve`). Every finished image goes to the journal
(:mod:`objdisc.engine.journal`) first; the final files are always built from the journal, in
dataset order, by rank 0 (:mod:`objdisc.engine.run_files`). So an uninterrupted run, a run
killed and resumed, and a torchrun run over N processes write the same predictions.json,
gt.json and per_image.json, and metrics.json differs only in its timing fields.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from objdisc.datasets import ImageRecord
from objdisc.datasets.checks import SHOWN_WARNINGS
from objdisc.engine import distributed
from objdisc.engine.discover import NON_FINITE, ImageResult, StageTimes, discover, discover_cached
from objdisc.engine.feature_cache import FeatureCache
from objdisc.engine.journal import Journal, JournalEntries, file_stamp, finished, read_journals, same_file
from objdisc.engine.out_folder import LOCK_NAME, OutLock, check_ours, clear_run, lock_out
from objdisc.engine.plan import RunPlan
from objdisc.engine.post import PostSpec
from objdisc.engine.post_pool import make_post
from objdisc.engine.run_files import entry_objects, read_metrics, write_outputs, write_pseudo_labels
from objdisc.engine.saliency_maps import clear_maps
from objdisc.errors import ObjdiscError
from objdisc.evaluation import default_evaluators
from objdisc.utils.device import resolve_device
from objdisc.utils.jsonio import write_json_atomic
from objdisc.utils.progress import show_progress
from objdisc.utils.provenance import now_iso, producer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Paths and figures of a finished run (``metrics`` is empty on ranks other than 0)."""

    out: Path
    metrics: dict[str, Any]
    producer: dict[str, Any]


def _finished(entry: dict[str, Any] | None, record: ImageRecord, stamp: list[int] | None) -> bool:
    """A result for this record's file as it is now (same name, same stamp)."""
    return finished(entry) and entry["file_name"] == record.file_name and same_file(entry, stamp)  # type: ignore[index]


def execute(plan: RunPlan, progress: bool | None = None, label: str | None = None) -> RunResult:
    """Run a resolved plan: the objects of every image, every metric asked, and the files in ``plan.out``.

    Writes ``predictions.json`` (COCO results), ``gt.json`` (COCO ground truth of the
    evaluated images, or the image list for ``folder``), ``per_image.json``,
    ``metrics.json`` and ``run.json`` atomically, plus ``journal/`` as images finish
    (:mod:`objdisc.engine.run_files`). Rerunning into the same ``out`` resumes: finished images
    are not processed again, and a fully finished run only rewrites its files (the model is not
    even built).

    Args:
        plan: the resolved run.
        progress: show a tqdm bar (rank 0 only); ``None`` shows it only on a terminal.
        label: the progress bar's title (``objdisc sweep``: which grid point).
    """
    rank = distributed.setup(plan.device_type)
    lock: OutLock | None = None
    created = not plan.out.exists()
    try:
        if rank.main:  # one writer per folder; other ranks write only their own journal in it
            lock = lock_out(plan.out)
            check_ours(plan.out)
        device = resolve_device(plan.device_type, rank.local_rank)
        made_by = producer(plan.model.spec, plan.model.weights, device, plan.precision)
        made_by["discovery"] = plan.discovery
        if plan.model.neurons is not None:
            made_by["test_time_registers"] = plan.model.neurons.describe()
        try:
            return _execute(plan, rank, device, made_by, progress, label)
        except OSError as exc:  # a full disk while writing the run's files
            if exc.filename is None or not Path(exc.filename).resolve().is_relative_to(plan.out.resolve()):
                raise
            raise ObjdiscError(
                f"{plan.out}: cannot write the run's files ({exc.strerror or exc}); make room there and rerun "
                "the same command: it resumes from the journal, nothing journaled is computed again"
            ) from exc
    except BaseException:
        if lock is not None and created:  # failed before any image (the model would not load): leave no folder
            _remove_if_unused(plan.out, lock)
        raise
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown(rank)


def _remove_if_unused(out: Path, lock: OutLock) -> None:
    """Remove a run folder this run created when no journal was written in it (nothing to resume)."""
    if any((out / "journal").glob("rank*.jsonl")):
        return
    lock.release()
    for name in ("run.json", LOCK_NAME):
        (out / name).unlink(missing_ok=True)
    for folder in (out / "journal", out):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def warn_changed_files(
    done: JournalEntries, records: Sequence[ImageRecord], stamps: dict[int, list[int] | None]
) -> None:
    """Say which journaled images are done again because their file changed, and when a journal of
    objdisc 0.1 (no file stamps) is resumed: its images are taken as journaled."""
    changed = [
        r.file_name
        for r in records
        if finished(summary := done.summary(r.image_id)) and not same_file(summary, stamps[r.image_id])  # type: ignore[arg-type]
    ]
    if changed:
        logger.warning(
            "%d journaled images are other files now (size or modification time changed: %s%s); they are done again",
            len(changed), ", ".join(changed[:3]), ", ..." if len(changed) > 3 else "",
        )  # fmt: skip
    if done.any_without_stamp:
        logger.warning(
            "the journal holds entries of objdisc 0.1, which recorded no file identity: images changed since "
            "those were journaled are not noticed (use --overwrite to redo them all)"
        )


@dataclass
class _Run:
    """This process's part of a plan: its rank, device, provenance block and feature cache."""

    plan: RunPlan
    rank: distributed.Rank
    device: torch.device
    made_by: dict[str, Any]
    cache: FeatureCache | None
    times: StageTimes = field(default_factory=StageTimes)


def _execute(
    plan: RunPlan,
    rank: distributed.Rank,
    device: torch.device,
    made_by: dict[str, Any],
    progress: bool | None,
    label: str | None,
) -> RunResult:
    """Resume from the journal, process this rank's images, and (rank 0) write the files."""
    records = plan.records
    cache = FeatureCache(plan.cache, plan.cache_identity) if plan.cache is not None else None
    this = _Run(plan, rank, device, made_by, cache)
    times = this.times
    if plan.overwrite and rank.main:
        clear_run(plan.out)
        clear_maps(plan.out)
    distributed.barrier(rank)
    stamps = {r.image_id: file_stamp(r.path) for r in records}
    done, legacy = read_journals(plan.journal_dir, plan.settings, plan.legacy, stamps)
    warn_changed_files(done, records, stamps)
    run_info = _run_info(this, len(records))
    if rank.main:
        write_json_atomic(plan.out / "run.json", run_info)
    mine = [records[i] for i in distributed.shard(len(records), rank)]
    # Finished means a result for the file as it is now: images that failed before (unreadable,
    # out of memory) or whose file changed since are done again.
    todo = [r for r in mine if not _finished(done.summary(r.image_id), r, stamps[r.image_id])]
    start = time.perf_counter()
    if todo:
        logger.info(
            "rank %d: %d of %d images to do (%d already in the journal)",
            rank.rank, len(todo), len(mine), len(mine) - len(todo),
        )  # fmt: skip
        # A resumed objdisc 0.1 journal holds no masks: none are added, so all images agree.
        _process(this, _engine(this, todo), len(todo), progress, label, with_masks=not legacy)
    seconds = time.perf_counter() - start
    n_resumed = sum(_finished(done.summary(r.image_id), r, stamps[r.image_id]) for r in records)
    done.close()
    distributed.barrier(rank)
    if not rank.main:
        return RunResult(plan.out, {}, made_by)
    with _finished_entries(this, stamps) as entries:
        evaluators = default_evaluators(plan.dataset, plan.metrics)
        metrics = write_outputs(plan.out, plan.dataset, records, entries, made_by, evaluators)
        metrics.update(
            seconds=round(seconds, 3),
            n_processed=len(records) - n_resumed,
            n_resumed=n_resumed,
            images_per_s=round(len(todo) * rank.world / seconds, 3) if todo and seconds > 0 else None,
            stage_seconds={k: round(v, 3) for k, v in asdict(times).items()},
            post_workers=plan.post_workers,
        )
        if n_resumed == len(records):  # a rescore of a finished run: the blocks it did not recompute stay
            _keep_earlier_blocks(plan.out, metrics)
        write_json_atomic(plan.out / "metrics.json", metrics)
        write_json_atomic(plan.out / "run.json", {**run_info, "status": "finished", "finished": now_iso()})
        if plan.pseudo_labels is not None:  # last: a failure here leaves every other file written
            try:
                write_pseudo_labels(plan.pseudo_labels, records, entries, made_by)
            except OSError as exc:
                raise ObjdiscError(
                    f"--pseudo-labels {plan.pseudo_labels}: cannot write the file ({exc.strerror or exc}); the run's "
                    f"files are in {plan.out}: rerun the same command with a writable --pseudo-labels (it resumes "
                    "from the journal and only writes the files)"
                ) from exc
    _refuse_all_skipped(plan, metrics)
    return RunResult(plan.out, metrics, made_by)


def _run_info(this: _Run, n_records: int) -> dict[str, Any]:
    """``run.json`` while the run is going (``status`` running)."""
    plan = this.plan
    dataset = {"kind": plan.options["dataset"], "name": plan.dataset.name, "image_root": str(plan.dataset.image_root)}
    return {
        "producer": this.made_by,
        "options": plan.options,
        "dataset": dataset,
        "n_records": n_records,
        "world_size": this.rank.world,
        "torch_threads": torch.get_num_threads(),
        "command": sys.argv,
        "started": now_iso(),
        "status": "running",
    }


def _engine(this: _Run, todo: list[ImageRecord]) -> Iterator[ImageResult]:
    """The images' results: from the feature cache where every asked feature is there, else the model.

    An entry that turns out unusable when read goes back to the model with the uncached images.
    """
    plan, cache, features, times = this.plan, this.cache, this.plan.features, this.times
    wanted = [features, *plan.cache_features]
    cached = [r for r in todo if all(cache.has(r.path, s) for s in wanted)] if cache else []
    cached_ids = {r.image_id for r in cached}
    misses: list[ImageRecord] = []
    if cached:
        assert cache is not None
        logger.info("rank %d: %d images from the feature cache %s", this.rank.rank, len(cached), cache.folder)
        yield from discover_cached(
            cached, cache, features=features, method=plan.method, patch_size=plan.model.spec.patch_size,
            device=this.device, times=times, misses=misses, patch_resize=plan.patch_resize, finalize_objects=False,
        )  # fmt: skip
    rest = [r for r in todo if r.image_id not in cached_ids] + misses
    if not rest:
        return
    yield from discover(
        plan.model.build(this.device), rest, features=features, method=plan.method, cache=cache,
        cache_features=plan.cache_features, batch_size=plan.batch_size, workers=plan.workers, device=this.device,
        precision=plan.precision, max_side=plan.max_side, max_patches=plan.max_patches,
        batch_tokens=plan.batch_tokens, times=times, patch_resize=plan.patch_resize, finalize=False,
    )  # fmt: skip


def _process(
    this: _Run,
    engine: Iterable[ImageResult],
    total: int,
    progress: bool | None,
    label: str | None = None,
    with_masks: bool = True,
) -> None:
    """Drain the engine through the post-processing (:mod:`objdisc.engine.post_pool`), journaling
    each image as it finishes; the bar shows the live evaluators' progress."""
    plan, rank = this.plan, this.rank
    show = rank.main and show_progress(progress)
    evaluators = [e for e in default_evaluators(plan.dataset, plan.metrics) if e.live]
    for evaluator in evaluators:
        evaluator.reset()
    mismatched = 0
    parts = [label] if label else []
    parts += [f"rank 0/{rank.world}"] if rank.world > 1 else []
    desc = " ".join(parts) or None
    spec = PostSpec(plan.method, plan.out if plan.saliency_maps else None, plan.refine, with_masks)

    def take(done: Iterable[tuple[ImageResult, dict[str, Any]]]) -> None:
        nonlocal mismatched
        for result, entry in done:
            journal.append(entry)
            if entry["objects"] is None:
                logger.warning("skipped %s", entry["error"])
            record, hw = result.record, entry["hw"]
            if hw and record.width and record.height and tuple(hw) != (record.height, record.width):
                mismatched += 1
                if mismatched <= SHOWN_WARNINGS:
                    logger.warning(
                        "%s: decoded %dx%d, annotated %dx%d: its boxes are for another size",
                        record.path, hw[1], hw[0], record.width, record.height,
                    )  # fmt: skip
            if evaluators:
                objects = entry_objects(entry)
                for evaluator in evaluators:
                    evaluator.process(record, objects)
                # before update(1), which redraws: the bar never lags an image
                bar.set_postfix_str(" ".join(e.progress() for e in evaluators), refresh=False)
            bar.update(1)

    with (
        Journal(plan.journal_dir, rank.rank, plan.settings) as journal,
        tqdm(total=total, unit="img", desc=desc, disable=not show) as bar,
        make_post(spec, plan.post_workers) as post,
        _model_threads(this),
    ):
        for result in engine:
            start = time.perf_counter()
            take(post.submit(result))
            this.times.post += time.perf_counter() - start
        start = time.perf_counter()
        take(post.drain())
        this.times.post += time.perf_counter() - start
    if mismatched > SHOWN_WARNINGS:
        logger.warning(
            "... and %d more images not of their annotated size (metrics.json: size_mismatch)",
            mismatched - SHOWN_WARNINGS,
        )


@contextlib.contextmanager
def _model_threads(this: _Run) -> Iterator[None]:
    """On the CPU, with post-processing workers, the model's threads are the cores the workers and
    the decoders leave (at least one) for the run's time: every core busy, none oversubscribed
    (on 2 cores, MaskCut with the CRF: 1.14 s/img with 1 thread and 2 workers, 1.33 with 2 threads)."""
    plan = this.plan
    if this.device.type != "cpu" or plan.post_workers == 0:
        yield
        return
    from objdisc.engine.discover import default_workers

    decoders = plan.workers if plan.workers is not None else default_workers()
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - plan.post_workers - decoders)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finished_entries(this: _Run, stamps: dict[int, list[int] | None]) -> JournalEntries:
    """Rank 0: every rank's journal entries, each record's (a record without one is an error)."""
    plan, records = this.plan, this.plan.records
    entries, _ = read_journals(plan.journal_dir, plan.settings, plan.legacy, stamps)
    missing = [r.file_name for r in records if (entries.summary(r.image_id) or {}).get("file_name") != r.file_name]
    if missing:
        entries.close()
        raise ObjdiscError(f"{len(missing)} images have no result in {plan.journal_dir} (first: {missing[0]})")
    return entries


def _keep_earlier_blocks(out: Path, metrics: dict[str, Any]) -> None:
    """Keep the metric blocks an earlier scoring of the same finished run computed and this one did
    not (``--metrics corloc`` after a run scored AP too), and say so in ``metrics.json``."""
    try:
        earlier = read_metrics(out)
    except (OSError, ValueError):
        return
    if earlier.get("image_set") != metrics["image_set"]:
        return
    kept = {k: v for k, v in (earlier.get("metrics") or {}).items() if k not in metrics["metrics"]}
    if kept:
        metrics["metrics"].update(kept)
        metrics["kept_from_earlier_scoring"] = sorted(kept)
        logger.warning(
            "kept the %s block(s) of the earlier scoring (not recomputed with --metrics); they are of the same "
            "journal and images", ", ".join(sorted(kept)),
        )  # fmt: skip


def _refuse_all_skipped(plan: RunPlan, metrics: dict[str, Any]) -> None:
    """A run whose every image was skipped gives no object: an error, not a score (its files stay)."""
    skipped = metrics["skipped"]
    n = len(plan.records)
    if not n or len(skipped) != n:
        return
    if all(NON_FINITE in str(s["reason"]) for s in skipped):
        raise ObjdiscError(
            f"every one of the {n} images gave {NON_FINITE} (NaN or inf; first: {skipped[0]['reason']}); "
            f"no object was found: check the weights file, or run with --precision fp32 (files in {plan.out})"
        )
    raise ObjdiscError(
        f"every one of the {n} images was skipped (first: {skipped[0]['reason']}); no object was found "
        f"and nothing was scored (the reasons are in {plan.out}/metrics.json: skipped)"
    )


__all__ = ["RunResult", "execute", "warn_changed_files"]
