"""The ``objdisc`` command line: parse options, call the library, print. Nothing else."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from objdisc.backbones import ALIASES, BACKBONES
from objdisc.datasets import DATASETS
from objdisc.errors import ObjdiscError

# Kept here so that `objdisc --help` does not import torch; equal to pipeline.PRECISIONS' keys.
PRECISIONS = ("fp32", "bf16", "fp16")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="objdisc")
def cli(verbose: int) -> None:
    """Unsupervised object discovery (LOST) on ViT keys, with and without registers."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
def backbones() -> None:
    """List the registered backbones."""
    rows = [("name", "timm model", "patch", "registers", "params (M)", "licence")]
    for spec in BACKBONES.values():
        params = f"{spec.params_m:.1f}"
        rows.append((spec.name, spec.timm_name, str(spec.patch_size), str(spec.num_registers), params, spec.license))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * width for width in widths))
    click.echo("\naliases: " + ", ".join(f"{alias} -> {name}" for alias, name in ALIASES.items()))


_PATH = click.Path(path_type=Path)


@cli.command(name="run")
@click.option("--backbone", "-b", required=True, help="Backbone name or alias (see `objdisc backbones`).")
@click.option("--dataset", "-d", required=True, type=click.Choice(DATASETS), help="Dataset kind.")
@click.option("--out", "-o", type=_PATH, default=None, help="Output folder [default: runs/<backbone>-<dataset>].")
@click.option("--weights", type=_PATH, default=None, help="Local .safetensors/.pth (timm or upstream layout).")
@click.option("--data-root", type=_PATH, default=None, envvar="OBJDISC_DATA_ROOT", help="Root of VOCdevkit/, COCO/.")
@click.option("--images", type=_PATH, default=None, help="Image folder (coco, folder).")
@click.option("--annotations", type=_PATH, default=None, help="COCO instances json (coco).")
@click.option("--split", default="trainval", show_default=True, help="VOC image set.")
@click.option("--no-hard", is_flag=True, help="VOC: drop difficult/truncated objects; skip images left with none.")
@click.option("--k-patches", default=100, show_default=True, type=click.IntRange(min=1), help="LOST k.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per forward.")
@click.option("--workers", default=None, type=click.IntRange(min=0), help="Decode workers [default: cores, max 8].")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option(
    "--precision",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", *PRECISIONS]),
    help="Model compute precision (autocast); auto: bf16 on CUDA, fp32 on CPU. LOST is always fp32.",
)
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N images of the split.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def run_command(
    backbone: str,
    dataset: str,
    out: Path | None,
    weights: Path | None,
    data_root: Path | None,
    images: Path | None,
    annotations: Path | None,
    split: str,
    no_hard: bool,
    k_patches: int,
    batch_size: int,
    workers: int | None,
    device: str,
    precision: str,
    limit: int | None,
    progress: bool | None,
) -> None:
    """One LOST box per image, CorLoc, and COCO files in --out."""
    from objdisc.pipeline import RunConfig, run, summary

    config = RunConfig(
        backbone=backbone,
        dataset=dataset,
        out=out if out is not None else Path("runs") / f"{backbone}-{dataset}",
        weights=weights,
        data_root=data_root,
        images=images,
        annotations=annotations,
        split=split,
        no_hard=no_hard,
        k_patches=k_patches,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        limit=limit,
    )
    try:
        result = run(config, progress=progress)
    except ObjdiscError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary(result))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="objdisc")


if __name__ == "__main__":
    main()
