"""``objdisc submit --array N ... -- run ARGS``: one ``objdisc run`` shard per array task, then a merge.

Through submitit (the engine CutLER's MaskCut jobs use; ``pip install 'objdisc[slurm]'``): task
``i`` of the array runs ``objdisc run ARGS --shard i/N --out OUT/shard-i-of-N`` (each shard
resumable from its own journal: a task that timed out or was preempted is resubmitted and goes
on where it stopped); when every task has finished, ``objdisc merge`` joins them into
``OUT/merged`` (with ``--pseudo-labels FILE``, the one pseudo-label file a detector trains on).

On SLURM the merge is a job of its own that starts when the whole array has succeeded
(``--dependency afterok``); with the local executor (``--executor local``: no cluster, the tasks
as processes on this machine) the command waits for the tasks, then merges. submitit's logs and
pickles go to ``OUT/submitit``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objdisc.errors import OptionError

EXECUTORS = ("auto", "slurm", "local")


@dataclass(frozen=True)
class SubmitConfig:
    """Everything ``objdisc submit`` takes.

    Attributes:
        run_args: the ``objdisc run`` arguments every task shares (no ``--out``, no ``--shard``).
        out: the folder of the shards' run folders, the merge and submitit's files.
        array: the number of tasks (shards).
        executor: ``slurm``, ``local``, or ``auto`` (SLURM where ``sbatch`` is found, else local).
        partition: the SLURM partition.
        gpus_per_task, cpus_per_task, mem_gb, timeout_min: each task's resources.
        parallelism: tasks running at once at most (SLURM's ``%``).
        account, qos, constraint: passed to sbatch when given.
        pseudo_labels: the merge also writes the pseudo-labels here.
        wait: wait for the merge (always, with the local executor).
    """

    run_args: list[str]
    out: Path
    array: int
    executor: str = "auto"
    partition: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int = 24 * 60
    parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    pseudo_labels: Path | None = None
    wait: bool = False


@dataclass
class Submitted:
    """What was submitted: the array's job ids, the shard folders, the merge (a job, or done here)."""

    cluster: str
    job_ids: list[str]
    shards: list[Path]
    merged: Path
    merge_job_id: str | None = None
    metrics: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def run_shard(args: list[str]) -> str:
    """One array task (what submitit calls on the node): ``python -m objdisc run ARGS``, its output in
    the task's log; returns the shard's run folder.

    Raises:
        RuntimeError: the run failed (its message is in the task's log).
    """
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "objdisc", *args], check=False)
    if done.returncode != 0:
        raise RuntimeError(f"objdisc {' '.join(args[:1])} exited with {done.returncode} (its message is above)")
    return args[args.index("--out") + 1]


def merge_shards(shards: list[str], out: str, pseudo_labels: str | None) -> dict[str, Any]:
    """The merge job: ``objdisc merge SHARD ... --out OUT``."""
    from objdisc.commands.merge import MergeConfig
    from objdisc.commands.merge import run as merge

    return merge(MergeConfig([Path(s) for s in shards], Path(out), Path(pseudo_labels) if pseudo_labels else None))


def shard_args(config: SubmitConfig) -> tuple[list[list[str]], list[Path]]:
    """Each task's ``objdisc run`` arguments and run folder.

    Raises:
        OptionError: the arguments do not start with ``run``, or carry ``--out`` / ``--shard``
            (``submit`` sets them per task), or an array of fewer than one task.
    """
    args = list(config.run_args)
    if not args or args[0] != "run":
        raise OptionError("submit: give the run after --, e.g. objdisc submit --array 8 --out OUT -- run -b ... -d ...")
    for flag in ("--out", "-o", "--shard"):
        if flag in args[1:] or any(a.startswith(f"{flag}=") for a in args[1:]):
            raise OptionError(f"submit: leave {flag} out of the run's arguments: each task's is set (OUT/shard-i-of-N)")
    if config.array < 1:
        raise OptionError(f"--array {config.array}: at least one task")
    width = len(str(config.array - 1))
    folders = [Path(config.out) / f"shard-{i:0{width}d}-of-{config.array}" for i in range(config.array)]
    tasks = [[*args, "--shard", f"{i}/{config.array}", "--out", str(f)] for i, f in enumerate(folders)]
    return tasks, folders


def _executor(config: SubmitConfig) -> Any:
    try:
        import submitit
    except ImportError:
        raise OptionError("submit needs submitit: pip install 'objdisc[slurm]' (or pip install submitit)") from None
    cluster = config.executor
    if cluster == "auto":
        cluster = "slurm" if shutil.which("sbatch") else "local"
    if cluster == "slurm" and not shutil.which("sbatch"):
        raise OptionError("--executor slurm: no sbatch on this machine; submit from a SLURM login node, or use local")
    executor = submitit.AutoExecutor(folder=Path(config.out) / "submitit" / "%j", cluster=cluster)
    params: dict[str, Any] = {"name": "objdisc", "timeout_min": config.timeout_min}
    if cluster == "slurm":
        params |= {"gpus_per_node": config.gpus_per_task, "tasks_per_node": 1, "nodes": 1}
        if config.partition:
            params["slurm_partition"] = config.partition
        if config.parallelism:
            params["slurm_array_parallelism"] = config.parallelism
        extra = {
            k: v for k, v in (("account", config.account), ("qos", config.qos), ("constraint", config.constraint)) if v
        }
        if extra:
            params["slurm_additional_parameters"] = extra
    if config.cpus_per_task:
        params["cpus_per_task"] = config.cpus_per_task
    if config.mem_gb:
        params["mem_gb"] = config.mem_gb
    executor.update_parameters(**params)
    return executor, cluster


def run(config: SubmitConfig) -> Submitted:
    """Submit the array and the merge (module docstring).

    Raises:
        OptionError: bad task arguments, no submitit, no SLURM where it was asked for (the run's
            own options are checked by the command line before: ``objdisc submit`` parses them).
        ObjdiscError: with the local executor, a task that failed (naming its log), or the merge's refusal.
    """
    from objdisc.errors import ObjdiscError

    tasks, shards = shard_args(config)
    executor, cluster = _executor(config)
    jobs = executor.map_array(run_shard, tasks)
    merged = Path(config.out) / "merged"
    pseudo = str(config.pseudo_labels) if config.pseudo_labels else None
    done = Submitted(cluster, [str(j.job_id) for j in jobs], shards, merged)
    if cluster == "slurm":
        array_id = str(jobs[0].job_id).split("_")[0]
        executor.update_parameters(gpus_per_node=0, slurm_additional_parameters={"dependency": f"afterok:{array_id}"})
        merge_job = executor.submit(merge_shards, [str(s) for s in shards], str(merged), pseudo)
        done.merge_job_id = str(merge_job.job_id)
        if config.wait:
            done.metrics = merge_job.result()
        return done
    for job, shard in zip(jobs, shards, strict=True):  # local: the tasks run here; wait, then merge
        try:
            job.result()
        except Exception as exc:
            raise ObjdiscError(
                f"submit: the task of {shard} failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1]}); its "
                f"log is in {Path(config.out) / 'submitit'}; rerun the same submit (finished shards resume)"
            ) from None
    done.metrics = merge_shards([str(s) for s in shards], str(merged), pseudo)
    return done


def report(done: Submitted, config: SubmitConfig) -> str:
    """What ``objdisc submit`` prints."""
    shards = " ".join(str(s) for s in done.shards)
    merge = f"objdisc merge {shards} --out {done.merged}" + (
        f" --pseudo-labels {config.pseudo_labels}" if config.pseudo_labels else ""
    )
    lines = [f"{done.cluster}: array of {len(done.job_ids)} tasks ({', '.join(done.job_ids[:3])}"
             f"{', ...' if len(done.job_ids) > 3 else ''})"]  # fmt: skip
    if done.merge_job_id:
        lines.append(f"merge job {done.merge_job_id} starts when every task has succeeded (afterok)")
    if done.metrics is not None:
        lines.append(
            f"merged {done.metrics['n_images']} images, {done.metrics['n_objects']} objects into {done.merged}/"
        )
    else:
        lines.append(f"if a task fails, rerun this submit (finished shards resume), or merge by hand: {merge}")
    return "\n".join(lines)


__all__ = ["EXECUTORS", "SubmitConfig", "Submitted", "merge_shards", "report", "run", "run_shard", "shard_args"]
