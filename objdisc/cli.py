"""The ``objdisc`` command line: parse options, call the library, print. Nothing else."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from objdisc.datasets import DATASETS, DatasetArgs
from objdisc.datasets.download.sources import DOWNLOADABLE
from objdisc.engine.limits import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_PATCHES
from objdisc.errors import ObjdiscError
from objdisc.methods import METHODS, all_options
from objdisc.methods.options import OptionInfo
from objdisc.models.args import ModelArgs
from objdisc.models.feature_spec import FEATURE_KINDS

F = TypeVar("F", bound=Callable[..., Any])

# Kept here so that `objdisc --help` does not import torch; equal to objdisc.utils.device.PRECISIONS' keys.
PRECISIONS = ("fp32", "bf16", "fp16")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="objdisc")
def cli(verbose: int) -> None:
    """Unsupervised object discovery on ViT features, with and without registers."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.help = (  # every registered method, from the registry
    "Unsupervised object discovery on ViT features, with and without registers: "
    + "; ".join(cls.title for cls in METHODS.values())
    + "."
)


@cli.command()
@click.option("--all", "all_timm", is_flag=True, help="Also every pretrained timm ViT that timm:NAME can take.")
@click.option("--check", is_flag=True, help="With --all: build each architecture (meta device) and list the readable.")
def backbones(all_timm: bool, check: bool) -> None:
    """List the registered backbones (and, with --all, the timm models `-b timm:NAME` takes)."""
    from objdisc.commands.backbones import BackbonesConfig, run

    text, note = run(BackbonesConfig(all_timm, check))
    click.echo(text)
    if note:
        click.echo(note, err=True)


_PATH = click.Path(path_type=Path)


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


# Which images: `run`, `sweep`, `eval`, `norms`.
_DATA = _options(
    click.option(
        "--dataset",
        "-d",
        required=True,
        type=click.Choice(list(DATASETS)),
        help="Dataset kind: " + "; ".join(f"{k}: {v.help}" for k, v in DATASETS.items()) + ".",
    ),
    click.option(
        "--data-root", type=_PATH, default=None, envvar="OBJDISC_DATA_ROOT", help="Root of VOCdevkit/, COCO/."
    ),
    click.option("--images", type=_PATH, default=None, help="Image folder (coco, folder)."),
    click.option("--annotations", type=_PATH, default=None, help="COCO instances json (coco)."),
    click.option("--split", default="trainval", show_default=True, help="VOC image set."),
    click.option("--no-hard", is_flag=True, help="VOC: drop difficult/truncated objects; skip images left with none."),
    click.option(
        "--classes",
        default=None,
        help="class-folders / tars: which class folders or shards: NAME,NAME; START:STOP of the sorted ones "
        "(CutLER's jobs); or @FILE, one name a line [default: all].",
    ),
)

_BACKBONE = _options(
    click.option(
        "--backbone",
        "-b",
        required=True,
        help="Backbone name or alias (see `objdisc backbones`), or timm:MODEL_NAME for any timm ViT.",
    ),
    click.option("--weights", type=_PATH, default=None, help="Local .safetensors/.pth (timm or upstream layout)."),
    click.option(
        "--resample-weights",
        is_flag=True,
        help="Load weights of another patch size or position grid by resampling them (refused otherwise).",
    ),
)

# Which model: `run`, `sweep`, `norms`.
_MODEL = _options(
    _BACKBONE,
    click.option(
        "--test-time-registers",
        default=None,
        metavar="FILE|builtin",
        help="Give the model a test-time register acting on these register neurons: a `registers find` "
        "file, or builtin (the published list: DINOv2 ViT-L/14).",
    ),
    click.option(
        "--ttr-top", default=None, type=click.IntRange(min=1), help="Only the first K neurons of a found list."
    ),
)

_METRICS = click.option(
    "--metrics",
    default=None,
    callback=lambda ctx, param, value: None if value is None else tuple(v for v in value.split(",") if v),
    help="Metrics to compute, e.g. corloc,ap,mask_ap [default: every one the dataset allows].",
)

# Options shared by `run` and `sweep`: what to run on, and how.
_COMMON = _options(
    _MODEL,
    _DATA,
    click.option(
        "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per forward, at most."
    ),
    click.option(
        "--batch-tokens",
        default=None,
        type=click.IntRange(min=1),
        help=f"Patches per forward, at most [default: {DEFAULT_BATCH_TOKENS['cpu']:,} on CPU, "
        f"{DEFAULT_BATCH_TOKENS['cuda']:,} on CUDA].",
    ),
    click.option("--workers", default=None, type=click.IntRange(min=0), help="Decode workers [default: cores, max 8]."),
    click.option(
        "--post-workers",
        default=None,
        type=click.IntRange(min=0),
        help="Processes for each image's host work after the method (MaskCut's CRF, the bilateral solver, mask "
        "encoding), overlapping the next batch's forward pass; 0: in the main process [default: the cores the "
        "main process and the decode workers leave free, at most 32].",
    ),
    click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])),
    click.option(
        "--precision",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", *PRECISIONS]),
        help="Model compute precision (autocast); auto: bf16 on CUDA, fp32 on CPU. LOST is always fp32.",
    ),
    click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N images of the split."),
    click.option(
        "--shard",
        default=None,
        metavar="i/N",
        help="Only the i-th of N exact, contiguous parts of the images (0-based; for job arrays; "
        "`objdisc merge` joins the parts' run folders).",
    ),
    click.option(
        "--max-side", default=None, type=click.IntRange(min=16), help="Resize larger images (boxes mapped back)."
    ),
    click.option(
        "--max-patches",
        default=DEFAULT_MAX_PATCHES,
        show_default=True,
        type=click.IntRange(min=1),
        help=f"Refuse images with more patches (NxN affinity; {DEFAULT_MAX_PATCHES:,} is 1 GiB) unless --max-side.",
    ),
    click.option("--overwrite", is_flag=True, help="Discard the journal in --out instead of resuming from it."),
    click.option(
        "--download",
        is_flag=True,
        help=f"Fetch the dataset first if it is missing ({', '.join(DOWNLOADABLE)}).",
    ),
    click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal]."),
    click.option(
        "--patch-resize/--no-patch-resize",
        default=None,
        help="Resize each image to the nearest patch multiple (Lanczos) instead of padding it, as TokenCut's "
        "saliency code [default: on for the saliency datasets].",
    ),
    click.option(
        "--refine",
        default="none",
        show_default=True,
        type=click.Choice(["none", "bilateral"]),
        help="Refine each image's saliency map with the bilateral solver (TokenCut's settings); it is scored "
        "soft, and written to OUT/masks and OUT/soft.",
    ),
    _METRICS,
)


_NO = "no__"  # parameter-name prefix of sweep's --no-X flags


def _method_flag(name: str, items: list[tuple[str, OptionInfo]], grid: bool) -> Callable[[F], F]:
    """One flag for a method option name that one or more methods declare (``grid``: comma lists)."""
    info = items[0][1]
    helps = " ".join(f"{i.help} [{m} default: {i.default}]" for m, i in items)
    if grid and info.type is bool:  # an axis of true/false values, and --no-X for the one value false

        def both(f: F) -> F:
            f = click.option(f"--no-{info.flag[2:]}", f"{_NO}{name}", is_flag=True, help=f"{info.flag} false.")(f)
            return click.option(info.flag, name, default=None, callback=_csv(bool), help=helps + " Comma list.")(f)

        return both
    if grid:
        return click.option(info.flag, name, default=None, callback=_csv(info.type), help=helps + " Comma list.")
    if info.type is bool:
        return click.option(f"{info.flag}/--no-{info.flag[2:]}", name, default=None, help=helps)
    kind: Any = click.Choice(list(info.choices)) if info.choices else info.type
    return click.option(info.flag, name, default=None, type=kind, help=helps)


def _method_options(grid: bool = False) -> Callable[[F], F]:
    """Every registered method's options as flags (read from the method classes)."""
    return _options(*(_method_flag(name, items, grid) for name, items in all_options().items()))


def _take_method_options(options: dict[str, Any]) -> dict[str, Any]:
    """Pop the method options given on the command line (the others stay the method's defaults)."""
    given = {}
    for name, items in all_options().items():
        value = options.pop(name)
        if options.pop(f"{_NO}{name}", False):  # sweep's --no-X: the axis [False]
            if value is not None:
                raise click.UsageError(f"{items[0][1].flag} and --no-{items[0][1].flag[2:]} together; give one")
            value = [False]
        if value is not None:
            given[name] = value
    return given


def _model_args(options: dict[str, Any]) -> ModelArgs:
    """Pop the model options (``_BACKBONE`` / ``_MODEL``) into :class:`~objdisc.models.args.ModelArgs`."""
    keys = ("weights", "resample_weights", "test_time_registers", "ttr_top")
    return ModelArgs(options.pop("backbone"), **{k: options.pop(k) for k in keys if k in options})


def _dataset_args(options: dict[str, Any]) -> DatasetArgs:
    """Pop the dataset options (``_DATA``) into :class:`~objdisc.datasets.DatasetArgs`."""
    keys = ("data_root", "images", "annotations", "split", "no_hard", "classes")
    return DatasetArgs(options.pop("dataset"), **{k: options.pop(k) for k in keys if k in options})


def _fail(exc: ObjdiscError) -> click.ClickException:
    return click.ClickException(str(exc))


_METHOD_HELP = "Discovery method: " + "; ".join(f"{k}: {cls.title}" for k, cls in METHODS.items()) + "."
_FEATURES_HELP = (
    "Keys, queries, values (heads concatenated), attn (the CLS token's attention per head) or kattn (keys, "
    "then that attention: FOUND's) [default: the "
    "method's own: " + ", ".join(f"{cls.feature_kinds[0]} for {k}" for k, cls in METHODS.items()) + "]."
)


@cli.command(name="run")
@_COMMON
@click.option("--out", "-o", type=_PATH, default=None, help="Output folder [default: runs/<backbone>-<dataset>].")
@click.option("--method", default="lost", show_default=True, type=click.Choice(list(METHODS)), help=_METHOD_HELP)
@_method_options()
@click.option("--features", default=None, type=click.Choice(list(FEATURE_KINDS)), help=_FEATURES_HELP)
@click.option("--layer", default=-1, show_default=True, type=int, help="Block index (negative: from the end).")
@click.option("--cache", type=_PATH, default=None, help="Feature cache folder: reuse features across runs.")
@click.option("--visualize", "n_pictures", default=0, type=click.IntRange(min=0), help="Draw the first N images.")
@click.option(
    "--pseudo-labels",
    type=_PATH,
    default=None,
    help="Also write the objects as a COCO instances file (category fg, RLE masks) for training a detector.",
)
def run_command(n_pictures: int, download: bool, progress: bool | None, **options: Any) -> None:
    """Objects in every image, their metrics, and COCO files in --out."""
    from objdisc.commands.run import RunConfig, default_out, fetch_dataset, run, summary

    method_options = _take_method_options(options)
    out = options.pop("out") or default_out(options["backbone"], options["dataset"])
    config = RunConfig(_model_args(options), _dataset_args(options), out, method_options=method_options, **options)
    try:
        if download:
            click.echo(fetch_dataset(config.data, progress))
        result = run(config, progress=progress)
        if not result.metrics:  # ranks other than 0 under torchrun: rank 0 merged and reports
            return
        click.echo(summary(result))
        if n_pictures:
            from objdisc.commands.visualize import VisualizeConfig
            from objdisc.commands.visualize import run as visualize
            from objdisc.utils.device import resolve_device

            where = resolve_device(config.device).type
            page = visualize(VisualizeConfig([result.out], n_pictures, device=where, overwrite=True))  # its vis/
            click.echo(f"pictures   {page}")
    except ObjdiscError as exc:
        raise _fail(exc) from exc


def _csv(kind: type) -> Callable[[click.Context, click.Parameter, str | None], list[Any] | None]:
    """A click callback: ``"a,b"`` -> ``[kind(a), kind(b)]``; not given -> ``None``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list[Any] | None:
        if value is None:
            return None
        try:
            return [_convert(kind, v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__} values, got {value!r}") from None

    return parse


def _convert(kind: type, text: str) -> Any:
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(text)
        return text.lower() in ("true", "1", "yes", "on")
    return kind(text)


@cli.command(name="sweep")
@_COMMON
@click.option("--out", "-o", type=_PATH, required=True, help="Sweep folder: one run folder per point + summary.")
@click.option("--method", "methods", default="lost", show_default=True, callback=_csv(str), help="e.g. lost,tokencut")
@click.option(
    "--features", "features_", default=None, callback=_csv(str), help="e.g. k,q,v [default: each method's own]"
)
@click.option("--layer", "layers", default="-1", show_default=True, callback=_csv(int), help="e.g. -1,-2,-3,-4")
@_method_options(grid=True)
@click.option("--cache", type=_PATH, default=None, help="Feature cache [default: OUT/cache].")
def sweep_command(
    methods: list[str], features_: list[str] | None, layers: list[int], download: bool, progress: bool | None,
    **options: Any,
) -> None:  # fmt: skip
    """Run a grid of --method x --features x --layer x method options, one forward pass per image."""
    from objdisc.commands.run import RunConfig, fetch_dataset
    from objdisc.commands.sweep import SweepConfig, report, run

    grid_options = _take_method_options(options)
    out = options.pop("out")
    config = SweepConfig(RunConfig(_model_args(options), _dataset_args(options), out, **options), out, methods,
                         features_, layers, grid_options)  # fmt: skip
    try:
        if download:
            click.echo(fetch_dataset(config.base.data, progress))
        rows = run(config, progress)
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    if rows:  # rank 0
        click.echo(report(config, rows))


@cli.command(name="eval")
@click.option(
    "--predictions",
    "-p",
    type=_PATH,
    required=True,
    help="COCO results JSON (any tool); for a saliency dataset also a folder of PNG maps, one per image stem.",
)
@_DATA
@click.option(
    "--images-of",
    type=_PATH,
    default=None,
    help="Score only the images this objdisc run folder scored (e.g. a --limit run).",
)
@click.option("--name", default=None, help="Row label for `objdisc table` [default: the file's stem].")
@_METRICS
@click.option("--out", "-o", type=_PATH, default=None, help="Write metrics.json + run.json here (for `objdisc table`).")
def eval_command(predictions: Path, **options: Any) -> None:
    """Every metric of any COCO-results file (CorLoc: best-scoring box per image, no prediction = miss)."""
    from objdisc.commands.eval import EvalConfig, report, run

    try:
        metrics, notes = run(EvalConfig(predictions, _dataset_args(options), **options))
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    for note in notes:
        click.echo(note, err=True)
    click.echo(report(metrics))


@cli.command(name="train-head")
@_BACKBONE
@_DATA
@click.option("--out", "-o", type=_PATH, required=True, help="The head: a .safetensors file (resumed from beside it).")
@click.option("--iterations", default=500, show_default=True, type=click.IntRange(min=0), help="FOUND's max_iter.")
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=5e-2, show_default=True, type=click.FloatRange(min=0, min_open=True), help="AdamW.")
@click.option("--step-lr", default=50, show_default=True, type=click.IntRange(min=1), help="StepLR's step size.")
@click.option("--gamma", default=0.95, show_default=True, type=click.FloatRange(min=0, max=1), help="StepLR's decay.")
@click.option("--w-bs-loss", default=1.5, show_default=True, type=float, help="Weight of the solver-refined loss.")
@click.option("--w-self-loss", default=4.0, show_default=True, type=float, help="Weight of the self-training loss.")
@click.option(
    "--stop-bkg-loss", default=100, show_default=True, type=click.IntRange(min=0), help="Iterations with the bkg loss."
)
@click.option("--crop", default=224, show_default=True, type=click.IntRange(min=8), help="Training image side, px.")
@click.option("--scale-range", default="0.1,3.0", show_default=True, help="Random scale range, MIN,MAX.")
@click.option("--augment/--no-augment", default=True, show_default=True, help="FOUND's scale and blur augmentation.")
@click.option("--bkg-th", default=0.3, show_default=True, type=float, help="Background similarity threshold.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--checkpoint-every", default=50, show_default=True, type=click.IntRange(min=1), help="Iterations.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N images.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@click.option(
    "--cache", type=_PATH, default=None, help="Feature cache: each image's features computed once (--no-augment)."
)
def train_head_command(
    out: Path, limit: int | None, device: str, checkpoint_every: int, progress: bool | None, scale_range: str,
    cache: Path | None, **options: Any,
) -> None:  # fmt: skip
    """Train FOUND's saliency head (a 1x1 convolution on the keys) as FOUND does, on any images."""
    from objdisc.commands.train_head import TrainHeadConfig, run
    from objdisc.engine.head_training import HeadSettings

    try:
        low, high = (float(v) for v in scale_range.split(","))
    except ValueError:
        raise click.BadParameter(f"{scale_range!r}: give MIN,MAX", param_hint="--scale-range") from None
    if not 0 < low <= high:
        raise click.BadParameter(f"{scale_range!r}: need 0 < MIN <= MAX", param_hint="--scale-range")
    model, data = _model_args(options), _dataset_args(options)
    settings = HeadSettings(scale_min=low, scale_max=high, **options)
    config = TrainHeadConfig(model, data, out, settings, limit, device, checkpoint_every, cache)
    try:
        run(config, progress=progress, echo=click.echo)
    except ObjdiscError as exc:
        raise _fail(exc) from exc


@cli.command(name="reproduce")
@click.option("--table", "table_name", required=True, help="A published table: registers-3 (registers paper, Table 3).")
@click.option("--out", "-o", type=_PATH, default=None, help="Folder of the cells' runs [default: runs/TABLE].")
@click.option(
    "--data-root", type=_PATH, default=None, envvar="OBJDISC_DATA_ROOT", help="Where the datasets are (or go)."
)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--download", is_flag=True, help="Fetch each dataset first if it is missing.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="First N images of each set (a quick look).")
@click.option("--dry-run", is_flag=True, help="Print what it downloads, its time and its commands; run nothing.")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
def reproduce_command(
    table_name: str, out: Path | None, data_root: Path | None, device: str, download: bool, limit: int | None,
    dry_run: bool, progress: bool | None,
) -> None:  # fmt: skip
    """Run every cell of a published table (resumable) and print it beside the paper's numbers."""
    import shlex

    from objdisc.commands.reproduce import ReproduceConfig, commands, describe, run

    config = ReproduceConfig(table_name, out or Path("runs") / table_name, data_root, device, download, limit)
    try:
        click.echo(describe(table_name))
        if dry_run:
            for cmd in commands(config):
                click.echo(shlex.join(cmd))
            return
        text = run(config, progress=progress, echo=click.echo)
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    click.echo(text, nl=False)
    if text.startswith("failed: "):  # the table is printed; the exit status says a cell failed
        raise SystemExit(1)


@cli.command(name="merge")
@click.argument("runs", nargs=-1, required=True, type=_PATH)
@click.option("--out", "-o", type=_PATH, required=True, help="The merged run folder.")
@click.option(
    "--pseudo-labels",
    type=_PATH,
    default=None,
    help="Also write the merged objects as one COCO pseudo-label file (category fg, RLE masks).",
)
def merge_command(runs: tuple[Path, ...], out: Path, pseudo_labels: Path | None) -> None:
    """Merge finished runs over parts of one dataset (shards, class folders) into one run folder."""
    from objdisc.commands.merge import MergeConfig, report, run

    config = MergeConfig(list(runs), out, pseudo_labels)
    try:
        metrics = run(config)
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    click.echo(report(metrics, config))


@cli.command(name="submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--array", "array", required=True, type=click.IntRange(min=1), help="Tasks (shards) of the array.")
@click.option("--out", "-o", type=_PATH, required=True, help="OUT/shard-i-of-N per task, OUT/merged, OUT/submitit.")
@click.option("--executor", default="auto", show_default=True, type=click.Choice(["auto", "slurm", "local"]),
              help="slurm, local (the tasks as processes here), or auto: slurm where sbatch is found.")  # fmt: skip
@click.option("--slurm-partition", "partition", default=None, help="SLURM partition.")
@click.option("--gpus-per-task", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--cpus-per-task", default=None, type=click.IntRange(min=1), help="Cores per task (post-workers).")
@click.option("--mem-gb", default=None, type=click.IntRange(min=1), help="Memory per task, GiB.")
@click.option("--timeout-min", default=24 * 60, show_default=True, type=click.IntRange(min=1))
@click.option("--parallelism", default=None, type=click.IntRange(min=1), help="Tasks running at once, at most.")
@click.option("--slurm-account", "account", default=None)
@click.option("--slurm-qos", "qos", default=None)
@click.option("--slurm-constraint", "constraint", default=None)
@click.option("--pseudo-labels", type=_PATH, default=None, help="The merge also writes the pseudo-labels here.")
@click.option("--wait", is_flag=True, help="Wait for the merge job (the local executor always waits).")
@click.argument("run_args", nargs=-1, required=True, type=click.UNPROCESSED)
def submit_command(run_args: tuple[str, ...], array: int, out: Path, **options: Any) -> None:
    """Run `objdisc run ARGS` as a job array of N shards, then merge them (submitit; SLURM or local).

    Usage: objdisc submit --array 8 --out OUT [--slurm-partition P ...] -- run -b ... -d ... [run options]
    """
    from objdisc.commands.submit import SubmitConfig, report, run, shard_args

    config = SubmitConfig(list(run_args), out, array, **options)
    try:
        shard_args(config)  # the task's own options first, as `objdisc run` parses them, before anything is submitted
        with run_command.make_context("run", [*run_args[1:], "--out", "-"]):
            pass
        done = run(config)
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    click.echo(report(done, config))


@cli.command(name="table")
@click.argument("runs", nargs=-1, required=True, type=_PATH)
@click.option("--format", "fmt", default="md", show_default=True, type=click.Choice(["md", "latex", "csv"]))
@click.option("--speed", is_flag=True, help="Add an images/s column (median over the row's runs).")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="A metric to show (e.g. corloc); repeat for more [default: each metric's headline values].",
)
@click.option("--caption", default=None, help="LaTeX: put the tabular in a table float with this caption.")
@click.option("--label", default=None, help="LaTeX: the float's \\label (e.g. tab:registers).")
def table_command(
    runs: tuple[Path, ...], fmt: str, speed: bool, metrics: tuple[str, ...], caption: str | None, label: str | None
) -> None:
    """Comparison table from run folders: rows = backbone (+ options), columns = datasets x metrics.

    Runs scored on other images of a dataset (a --limit run beside full ones) go to a further table.
    """
    from objdisc.commands.table import TableConfig, run

    try:
        text, notes = run(TableConfig(list(runs), fmt, speed, list(metrics), caption, label))
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    for note in notes:
        click.echo(note, err=True)
    click.echo(text, nl=False)


@cli.command(name="norms")
@_MODEL
@_DATA
@click.option("--out", "-o", type=_PATH, required=True, help="Folder for norms.json, layers.csv and the pictures.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1), help="First N images.")
@click.option("--threshold", default=None, type=float, help="High-norm threshold [default: found in the bimodal gap].")
@click.option("--all-layers", is_flag=True, help="Also a histogram of every block's patch norms.")
@click.option("--max-side", default=None, type=click.IntRange(min=16), help="Resize larger images first.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--overwrite", is_flag=True, help="Replace an earlier norms output in --out.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@click.option(
    "--figures", default=None, help="Also the charts for print: pdf,svg,png (matplotlib: pip install 'objdisc[plots]')."
)
def norms_command(progress: bool | None, figures: str | None, **options: Any) -> None:
    """Token-norm diagnostics: histogram, high-norm share and positions, per-layer norms, registers."""
    from objdisc.commands.norms import NormsConfig, report, run
    from objdisc.reports.print_figures import parse_formats

    try:
        config = NormsConfig(_model_args(options), _dataset_args(options), **options, figures=parse_formats(figures))
        summary = run(config, progress)
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    click.echo(report(summary, config.out))


@cli.group()
def registers() -> None:
    """Register neurons: find them, for test-time registers (run --test-time-registers FILE)."""


@registers.command(name="find")
@_BACKBONE
@click.option(
    "--dataset", "-d", default=None, type=click.Choice(list(DATASETS)), help="Dataset kind [default: folder]."
)
@click.option("--data-root", type=_PATH, default=None, envvar="OBJDISC_DATA_ROOT", help="Root of VOCdevkit/, COCO/.")
@click.option("--images", type=_PATH, default=None, help="Image folder (folder, coco).")
@click.option("--annotations", type=_PATH, default=None, help="COCO instances json (coco).")
@click.option("--split", default="trainval", show_default=True, help="VOC image set.")
@click.option("--limit", default=500, show_default=True, type=click.IntRange(min=1), help="First N images.")
@click.option("--layer", default=-1, show_default=True, type=int, help="Block whose output decides the outliers.")
@click.option(
    "--threshold",
    default="auto",
    show_default=True,
    help="Outlier norm threshold, or auto: the bimodal gap `objdisc norms` finds.",
)
@click.option("--top", default=None, type=click.IntRange(min=1), help="Ranked neurons to keep [default: 50].")
@click.option("--max-side", default=None, type=click.IntRange(min=16), help="Resize larger images first.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["auto", *PRECISIONS]))
@click.option("--out", "-o", type=_PATH, required=True, help="The neurons file to write (JSON).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier `registers find` file at --out.")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
def registers_find(threshold: str, dataset: str | None, top: int | None, progress: bool | None, **options: Any) -> None:
    """Rank the MLP neurons that write the high-norm outlier tokens (Jiang et al., NeurIPS 2025)."""
    from objdisc.commands.registers_find import FindConfig, report, run
    from objdisc.registers.neuron_search import DEFAULT_TOP

    try:
        level = None if threshold == "auto" else float(threshold)
    except ValueError:
        raise click.BadParameter(f"{threshold!r}: a number or auto", param_hint="--threshold") from None
    options["dataset"] = dataset or "folder"
    model, data = _model_args(options), _dataset_args(options)
    config = FindConfig(model, data, threshold=level, top=top or DEFAULT_TOP, **options)
    try:
        found = run(config, progress)
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    click.echo(report(found, config.out))


@cli.command(name="visualize")
@click.argument("runs", nargs=-1, required=True, type=_PATH)
@click.option("--only", type=click.Choice(["hits", "misses"]), default=None, help="Only hits or only misses.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="At most N images.")
@click.option("--out", "-o", type=_PATH, default=None, help="Output folder [default: RUN/vis].")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option(
    "--weights",
    "weights",
    multiple=True,
    type=_PATH,
    help="The run's weights file where it has moved (matched by sha256; repeat for two runs).",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier visualize output in --out.")
@click.option(
    "--figures",
    default=None,
    help="Also each picture for print, in these formats: pdf,svg,png (matplotlib: pip install 'objdisc[plots]').",
)
@click.option("--grid", default=None, metavar="ROWS,COLS", help="The print figures' panel grid [default: near square].")
@click.option("--figure-width", default=None, type=click.FloatRange(min=1.0), help="Print width, inches [3.3].")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def visualize_command(
    runs: tuple[Path, ...],
    only: str | None,
    limit: int,
    out: Path | None,
    device: str,
    weights: tuple[Path, ...],
    overwrite: bool,
    figures: str | None,
    grid: str | None,
    figure_width: float | None,
    progress: bool | None,
) -> None:
    """Pictures of what the method did per image (recomputed) and an HTML gallery; two runs side by side."""
    from objdisc.commands.visualize import VisualizeConfig, run
    from objdisc.reports.print_figures import parse_formats, parse_grid
    from objdisc.utils.device import resolve_device

    try:
        where = resolve_device(device).type
        config = VisualizeConfig(
            list(runs), limit, out, only, where, list(weights), overwrite, parse_formats(figures), parse_grid(grid),
            figure_width, progress,
        )  # fmt: skip
        page = run(config)
    except ObjdiscError as exc:
        raise _fail(exc) from exc
    click.echo(f"gallery: {page}")


@cli.group()
def data() -> None:
    """Download, verify and inspect the benchmark datasets."""


_DATA_ROOT = click.option(
    "--data-root", type=_PATH, default=None, envvar="OBJDISC_DATA_ROOT", help="Root for VOCdevkit/ and COCO/."
)


@data.command(name="download")
@click.argument("kinds", nargs=-1, required=True, type=click.Choice([*DOWNLOADABLE, "all"]))
@_DATA_ROOT
@click.option("--mirror", default=None, help="One base URL holding every file, flat [env: OBJDISC_MIRROR].")
@click.option(
    "--archive",
    "archives",
    multiple=True,
    type=_PATH,
    help="Use this local archive (known by name, or by size and md5).",
)
@click.option("--full-zip", is_flag=True, help="COCO20k: take train2014.zip (13 GB) instead of 19,817 images.")
@click.option("--workers", default=16, show_default=True, type=click.IntRange(min=1), help="Parallel image fetches.")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
def data_download(
    kinds: tuple[str, ...],
    data_root: Path | None,
    mirror: str | None,
    archives: tuple[Path, ...],
    full_zip: bool,
    workers: int,
    progress: bool | None,
) -> None:
    """Fetch, verify and unpack datasets under --data-root (resumable; a rerun skips what is done)."""
    from objdisc.commands.data import DownloadConfig, download

    config = DownloadConfig(list(kinds), data_root, mirror, list(archives), full_zip, workers)
    try:
        for line in download(config, progress):
            click.echo(line)
    except ObjdiscError as exc:
        raise _fail(exc) from exc


@data.command(name="status")
@_DATA_ROOT
def data_status(data_root: Path | None) -> None:
    """What is under --data-root: expected vs found images and annotations, verified or not."""
    from objdisc.commands.data import status

    try:
        click.echo(status(data_root))
    except ObjdiscError as exc:
        raise _fail(exc) from exc


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="objdisc")


if __name__ == "__main__":
    main()
