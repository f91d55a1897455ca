"""The ``objdisc`` command line: parse options, call the library, print. Nothing else."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from objdisc.datasets import DATASETS
from objdisc.datasets.download.sources import DOWNLOADABLE
from objdisc.engine.limits import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_PATCHES
from objdisc.errors import ObjdiscError
from objdisc.methods import METHODS, all_options
from objdisc.methods.options import OptionInfo
from objdisc.models.feature_spec import FEATURE_KINDS
from objdisc.models.specs import ALIASES, BACKBONES
from objdisc.utils.text_table import text_table

F = TypeVar("F", bound=Callable[..., Any])

# Kept here so that `objdisc --help` does not import torch; equal to pipeline.PRECISIONS' keys.
PRECISIONS = ("fp32", "bf16", "fp16")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="objdisc")
def cli(verbose: int) -> None:
    """Unsupervised object discovery (LOST, TokenCut, DINO-seg) on ViT features, with and without registers."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--all", "all_timm", is_flag=True, help="Also every pretrained timm ViT that timm:NAME can take.")
@click.option("--check", is_flag=True, help="With --all: build each architecture (meta device) and list the readable.")
def backbones(all_timm: bool, check: bool) -> None:
    """List the registered backbones (and, with --all, the timm models `-b timm:NAME` takes)."""
    if all_timm:
        from objdisc.models.specs import timm_models

        names = timm_models(check)
        for name in names:
            click.echo(f"timm:{name}")
        how = "each architecture built and checked" if check else "by module (ViT, DeiT, EVA); each is checked on use"
        click.echo(
            f"\n{len(names)} pretrained timm models ({how}); any other timm ViT works as timm:NAME too", err=True
        )
        return
    rows = [
        (
            "name",
            "timm model",
            "patch",
            "registers",
            "CLS",
            "params (M)",
            "licence",
            "position embedding at other sizes",
        )
    ]
    for spec in BACKBONES.values():
        params = f"{spec.params_m:.1f}"
        cls = "yes" if spec.class_token else "no"
        row = (
            spec.name,
            spec.timm_name,
            str(spec.patch_size),
            str(spec.num_registers),
            cls,
            params,
            spec.license,
            spec.pos_embed_note,
        )
        rows.append(row)
    click.echo(text_table(rows))
    click.echo("\naliases: " + ", ".join(f"{alias} -> {name}" for alias, name in ALIASES.items()))


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


def _config(options: dict[str, Any]) -> Any:
    """A RunConfig from parsed options (fetching the dataset first under --download)."""
    from objdisc.engine.runner import RunConfig

    if options.pop("download"):
        from objdisc.datasets import resolve_data_root
        from objdisc.datasets.download.get import DOWNLOADABLE, get_dataset

        if options["dataset"] not in DOWNLOADABLE:
            raise click.UsageError(f"--download works for {', '.join(DOWNLOADABLE)}, not {options['dataset']}")
        click.echo(
            get_dataset(options["dataset"], resolve_data_root(options["data_root"]), progress=options["progress"])
        )
    options.pop("progress")
    return RunConfig(**options)


_METHOD_HELP = "Discovery method: " + "; ".join(f"{k}: {cls.title}" for k, cls in METHODS.items()) + "."
_FEATURES_HELP = (
    "Keys, queries, values (heads concatenated) or attn (the CLS token's attention per head) "
    "[default: the method's own: k for lost and tokencut, attn for dinoseg]."
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
def run_command(n_pictures: int, **options: Any) -> None:
    """Objects in every image (LOST, TokenCut, DINO-seg, MaskCut), their metrics, and COCO files in --out."""
    from objdisc.engine.runner import default_out, run, summary

    options["method_options"] = _take_method_options(options)
    if options["out"] is None:
        options["out"] = default_out(options["backbone"], options["dataset"])
    progress = options["progress"]
    try:
        config = _config(options)
        result = run(config, progress=progress)
        if result.metrics and n_pictures:
            from objdisc.reports.pictures import visualize
            from objdisc.utils.device import resolve_device

            where = resolve_device(config.device).type
            page = visualize([result.out], limit=n_pictures, device=where, overwrite=True)  # the run's own vis/
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
    if result.metrics:  # rank 0 (the only process, or the one that merged under torchrun)
        click.echo(summary(result))
        if n_pictures:
            click.echo(f"pictures   {page}")


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
def sweep_command(methods: list[str], features_: list[str] | None, layers: list[int], **options: Any) -> None:
    """Run a grid of --method x --features x --layer x method options, one forward pass per image."""
    from objdisc.commands.sweep import grid, sweep

    grid_options = _take_method_options(options)
    out = options["out"]
    options["cache"] = options["cache"] or out / "cache"
    progress = options["progress"]
    try:
        points = grid(methods, features_, layers, grid_options)
        rows = sweep(_config(options), points, out, progress=progress)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
    if rows:  # rank 0
        files = "summary.md, summary.csv, summary.json"
        click.echo((out / "summary.md").read_text() + f"\n{len(points)} runs in {out}/ ({files})")


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
def eval_command(**options: Any) -> None:
    """Every metric of any COCO-results file (CorLoc: best-scoring box per image, no prediction = miss)."""
    from objdisc.evaluation.score_file import EvalConfig, eval_file

    try:
        metrics, notes = eval_file(EvalConfig(**options))
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
    for note in notes:
        click.echo(note, err=True)
    from objdisc.evaluation import EVALUATORS

    for name, block in metrics["metrics"].items():
        click.echo(EVALUATORS[name].summary_line(block))
    click.echo(
        f"{metrics['n_images']} images: {metrics['n_missing']} without a prediction, "
        f"{metrics['n_unknown']} predictions for images not scored"
        + (f", {metrics['no_ground_truth']} without ground truth left out" if metrics["no_ground_truth"] else "")
    )


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
def table_command(runs: tuple[Path, ...], fmt: str, speed: bool, metrics: tuple[str, ...]) -> None:
    """Comparison table from run folders: rows = backbone (+ options), columns = datasets x metrics."""
    from objdisc.reports.table import table

    try:
        text, notes = table(list(runs), fmt, speed, list(metrics) or None)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
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
def norms_command(progress: bool | None, **options: Any) -> None:
    """Token-norm diagnostics: histogram, high-norm share and positions, per-layer norms, registers."""
    from objdisc.registers.norm_diagnostics import NormsConfig, norms

    out = options["out"]
    try:
        summary = norms(NormsConfig(**options), progress)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
    share = 100 * summary["share_high"]
    found = summary["threshold"]
    line = f"threshold {found:.2f} ({summary['threshold_source']})" if found is not None else "no bimodal gap found"
    click.echo(f"{summary['n_images']} images, {summary['n_patch_tokens']:,} patch tokens; {line}")
    top = summary["output_norm"]["max"]
    click.echo(f"{summary['n_high']:,} high-norm patch tokens ({share:.2f}%); output norm max {top:.1f}")
    cos = summary["neighbour_cosine"]
    if cos["high_norm_mean"] is not None or cos["other_mean"] is not None:
        high, other = (("none" if v is None else f"{v:.3f}") for v in (cos["high_norm_mean"], cos["other_mean"]))
        click.echo(f"patch-embedding cosine to 4 neighbours: high-norm {high}, others {other}")
    if "test_time_registers" in summary:
        ttr = summary["test_time_registers"]
        click.echo(
            f"test-time registers: high-norm patch tokens {ttr['n_high_before']:,} "
            f"({100 * ttr['share_high_before']:.2f}%) -> {ttr['n_high_after']:,} "
            f"({100 * ttr['share_high_after']:.2f}%); extra token norm mean "
            f"{ttr['extra_token_norm']['mean']:.1f}, max {ttr['extra_token_norm']['max']:.1f}"
        )
    click.echo(f"files in {out}/ (norms.json, layers.csv, histogram.png, layers.png)")


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
    from objdisc.registers.neuron_search import DEFAULT_TOP, FindConfig, find

    try:
        level = None if threshold == "auto" else float(threshold)
    except ValueError:
        raise click.BadParameter(f"{threshold!r}: a number or auto", param_hint="--threshold") from None
    out = options["out"]
    try:
        config = FindConfig(**options, dataset=dataset or "folder", threshold=level, top=top or DEFAULT_TOP)
        found = find(config, progress)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
    best = found["ranked"][0]
    click.echo(
        f"{found['n_images']} images ({found['n_images_with_outliers']} with outliers), threshold "
        f"{found['threshold']:.2f} ({found['threshold_source']}), {100 * found['share_outlier_tokens']:.2f}% of tokens "
        f"above it after block {found['block']}"
    )
    click.echo(f"top neuron: block {best['block']} unit {best['neuron']} (score {best['score']:.3g})")
    click.echo(f"{len(found['ranked'])} ranked neurons in {out}; use: objdisc run --test-time-registers {out}")


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
def visualize_command(
    runs: tuple[Path, ...],
    only: str | None,
    limit: int,
    out: Path | None,
    device: str,
    weights: tuple[Path, ...],
    overwrite: bool,
) -> None:
    """Pictures of what the method did per image (recomputed) and an HTML gallery; two runs side by side."""
    from objdisc.reports.pictures import visualize
    from objdisc.utils.device import resolve_device

    try:
        page = visualize(list(runs), out, only, limit, resolve_device(device).type, list(weights), overwrite)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
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
    from objdisc.datasets import resolve_data_root
    from objdisc.datasets.download.get import DOWNLOADABLE, get_dataset, match_archives

    try:
        root = resolve_data_root(data_root)
        wanted = list(DOWNLOADABLE if "all" in kinds else dict.fromkeys(kinds))
        local = match_archives(archives, wanted)
        for kind in wanted:
            line = get_dataset(
                kind, root, mirror=mirror, archives=local, full_zip=full_zip, workers=workers, progress=progress
            )
            click.echo(line)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc


@data.command(name="status")
@_DATA_ROOT
def data_status(data_root: Path | None) -> None:
    """What is under --data-root: expected vs found images and annotations, verified or not."""
    from objdisc.datasets import resolve_data_root
    from objdisc.datasets.download.get import DOWNLOADABLE, dataset_status

    try:
        root = resolve_data_root(data_root)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [("dataset", "images", "annotations", "verified", "state", "folder")]
    for kind in DOWNLOADABLE:
        s = dataset_status(kind, root)
        state = "complete" if s.complete else ("missing" if s.found_images == 0 else "incomplete")
        rows.append(
            (
                kind,
                f"{s.found_images}/{s.expected_images}",
                f"{s.found_annotations}/{s.expected_annotations}",
                "yes" if s.verified else "no",
                state,
                str(s.folder),
            )
        )
    click.echo(text_table(rows))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="objdisc")


if __name__ == "__main__":
    main()
